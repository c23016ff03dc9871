"""The [attack] config section, client.lr_decay, the attack plan and forced participation
(no Ray: the AttackGrid runs over an in-process echo grid)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from flower_suite.attacks import N_S_ESTIMATE_KEY, FixedFrequency
from flower_suite.clients.client_app import CLIENT_INFO_KEY, decayed_lr
from flower_suite.flower_compat import Run
from flower_suite.simulations import ConfigError, ExperimentTask, load_config
from flower_suite.simulations.engine.server import train_config_record
from flower_suite.simulations.threats import client_threat, plan_threat
from flower_suite.simulations.threats.server import AttackGrid
from flower_suite.training import TrainConfig

EXPERIMENT = Path(__file__).resolve().parents[2] / "experiments" / "digits_edge.toml"


@pytest.fixture
def edge_npz(tmp_path: Path) -> Path:
    """A small user edge set: 20 train and 10 test images, target label 1, true class 7."""
    rng = np.random.default_rng(0)
    path = tmp_path / "edge.npz"
    np.savez(
        path,
        train_x=rng.random((20, 1, 8, 8), dtype=np.float32),
        train_y=np.ones(20, dtype=np.int64),
        test_x=rng.random((10, 1, 8, 8), dtype=np.float32),
        test_y=np.ones(10, dtype=np.int64),
        source_label=np.int64(7),
    )
    return path


def _npz_config(path: Path, *overrides: str) -> Any:
    """Digits (K = 10, m = 5) with a black-box attacker using the .npz edge set."""
    return load_config(
        "digits_fedavg",
        [
            "num_clients=10",
            "clients_per_round=5",
            "model.name=mlp",
            "attack.name=edge_blackbox",
            f"attack.edge_set={str(path)!r}",
            "attack.mix_size=20",
            *overrides,
        ],
    )


def test_default_config_has_no_attack() -> None:
    config = load_config("digits_fedavg")
    assert not config.attack.enabled
    assert config.to_dict()["attack"]["name"] == ""
    # Without [attack] and lr_decay the clients receive exactly the keys they always did.
    record = train_config_record(config, ExperimentTask(config))
    assert set(record) == {
        "lr",
        "local-epochs",
        "momentum",
        "weight-decay",
        "batch-size",
        "proximal-mu",
        "seed",
    }


def test_digits_edge_experiment_loads() -> None:
    config = load_config(EXPERIMENT)
    attack = config.attack
    assert (attack.name, attack.pattern, attack.every_k, attack.start_round) == (
        "edge_blackbox",
        "fixed_frequency",
        1,
        21,
    )
    assert (config.num_clients, config.sampled_clients, config.rounds) == (20, 10, 120)
    assert config.client.lr_decay == 0.998 and config.data.dataset == "digits_edge"
    ndc = load_config(EXPERIMENT, ["strategy.name=ndc", "strategy.max_norm=0.3"])
    assert ndc.strategy.kwargs == {"max_norm": 0.3}
    assert not load_config(EXPERIMENT, ['attack.name=""']).attack.enabled


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("attack.name=krumm", "attack.name"),
        ("attack.every_k=0", "attack.every_k"),
        ("attack.start_round=500", "attack.start_round"),
        ("attack.pattern=sometimes", "attack.pattern"),
        ("attack.attackers=[3, 30]", "attack.attackers"),
        ("attack.attackers=[3, 3]", "attack.attackers"),
        ("attack.attackers='3'", "attack.attackers"),
        ("attack.num_attackers=20", "attack.num_attackers"),
        ("attack.num_attackers=11", "attack.num_attackers"),  # more than m = 10
        ("attack.mix_ratio=1.5", "attack.mix_ratio"),
        ("attack.mix_size=-1", "attack.mix_size"),
        ("attack.pgd_radius=0", "attack.pgd_radius"),
        ("attack.radius_decay=1.5", "attack.radius_decay"),
        ("attack.project_every=0", "attack.project_every"),
        ("attack.attacker_fraction=0.5", "attack.num_honest_holders"),
        ("attack.attacker_fraction=2", "attack.attacker_fraction"),
        ("attack.honest_holders=[4]", "attack.honest_holders"),  # p = 1: nothing to hold
        ("attack.edge_set=missing.npz", "attack.edge_set"),
        ("attack.params.lr=0.1", "attack.params.lr"),  # black-box uses honest hyper-params
        ("attack.unknown=1", "attack.unknown"),
        ("data.dataset=digits", "attack.edge_set"),  # edge images would stay in honest data
        ("client.lr_decay=0", "client.lr_decay"),
        ("client.lr_decay=1.2", "client.lr_decay"),
    ],
)
def test_bad_attack_settings_name_the_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(EXPERIMENT, [override])
    assert str(info.value).startswith(field), str(info.value)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["attack.name=alie", "attack.params.zz=1"], "attack.params.zz"),
        (["attack.name=ipm", "attack.params.epsilon=-1"], "attack.params"),
        (["attack.name=sign_flip", "attack.num_attackers=0"], None),
        (["attack.name=alie", "attack.num_attackers=0"], "attack.num_attackers"),
        (["attack.name=edge_pgd", "attack.params.lr=0.1"], None),
    ],
)
def test_byzantine_params_are_checked(overrides: list[str], field: str | None) -> None:
    if field is None:
        load_config(EXPERIMENT, overrides)
        return
    with pytest.raises(ConfigError, match=f"^{field}"):
        load_config(EXPERIMENT, overrides)


def test_lr_decay_is_bitwise_neutral_when_absent() -> None:
    hparams = TrainConfig(lr=0.05)
    assert decayed_lr(hparams, ConfigRecord({"lr": 0.05}), 7) is hparams
    assert decayed_lr(hparams, None, 7) is hparams
    decayed = decayed_lr(hparams, ConfigRecord({"lr-decay": 0.998}), 10)
    assert decayed.lr == pytest.approx(0.05 * 0.998**10, rel=1e-12)
    config = load_config(EXPERIMENT, ['attack.name=""'])
    assert train_config_record(config)["lr-decay"] == 0.998


def test_plan_is_seeded_and_checks_attacker_data(edge_npz: Path) -> None:
    config = _npz_config(edge_npz, "attack.num_attackers=2")
    task = ExperimentTask(config)
    plan = plan_threat(task)
    assert plan.attackers == plan_threat(ExperimentTask(config)).attackers
    assert len(plan.attackers) == 2 and plan.schedule.attacker_partitions == set(plan.attackers)
    assert len(plan.attacker_edge) == 20 and plan.honest_edge == {}
    assert (plan.edge_test.y == 1).all()
    # The mix needs mix_size - 10 clean examples from the attacker's own partition.
    with pytest.raises(ConfigError, match=r"^attack\.attackers: partition 0"):
        plan_threat(
            ExperimentTask(_npz_config(edge_npz, "attack.attackers=[0]", "attack.mix_size=400"))
        )
    with pytest.raises(ConfigError, match=r"^attack\.mix_size"):
        plan_threat(ExperimentTask(_npz_config(edge_npz, "attack.mix_size=60")))  # 30 edge > 20


def test_honest_holders_get_correctly_labelled_edge_examples(edge_npz: Path) -> None:
    config = _npz_config(
        edge_npz,
        "attack.attackers=[1]",
        "attack.attacker_fraction=0.5",
        "attack.num_honest_holders=2",
        "attack.mix_size=10",
    )
    plan = plan_threat(ExperimentTask(config))
    assert 1 not in plan.honest_holders and len(plan.honest_holders) == 2
    assert len(plan.attacker_edge) == 10 and (plan.attacker_edge.y == 1).all()
    assert sum(len(d) for d in plan.honest_edge.values()) == 10
    assert all((d.y == 7).all() for d in plan.honest_edge.values())
    threat = client_threat(plan, seed=0)
    assert threat.mods  # the round tracker for the attacker's schedule


def test_replacement_sends_the_n_s_estimate(edge_npz: Path) -> None:
    config = _npz_config(edge_npz, "attack.name=edge_pgd_replacement", "attack.pgd_radius=0.036")
    task = ExperimentTask(config)
    mean_size = np.mean([len(p) for p in task.partitions()])
    assert train_config_record(config, task)[N_S_ESTIMATE_KEY] == pytest.approx(5 * mean_size)
    fixed = _npz_config(edge_npz, "attack.name=edge_pgd_replacement", "attack.n_s_estimate=300")
    assert train_config_record(fixed, ExperimentTask(fixed))[N_S_ESTIMATE_KEY] == 300.0


# --- forced participation ---------------------------------------------------------------------


class EchoGrid(Grid):
    """Replies to each train instruction with ``arrays + (partition + 1)`` (no clients)."""

    def __init__(self, num_nodes: int) -> None:
        self.node_partition = {1000 + 7 * p: p for p in range(num_nodes)}
        self.sent: list[list[int]] = []

    @property
    def run(self) -> Any:  # type: ignore[override]
        return None

    def set_run(self, run: Run) -> None:
        pass

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return Message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.node_partition)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        self.sent.append([self.node_partition[m.metadata.dst_node_id] for m in messages])
        replies = []
        for msg in messages:
            p = self.node_partition[msg.metadata.dst_node_id]
            arrays = msg.content.array_records["arrays"]
            shifted = ArrayRecord({k: Array(a.numpy() + (p + 1)) for k, a in arrays.items()})
            content = RecordDict(
                {"arrays": shifted, CLIENT_INFO_KEY: ConfigRecord({"partition-id": p})}
            )
            replies.append(Message(content=content, reply_to=msg))
        return replies


def _instructions(grid: EchoGrid, server_round: int, nodes: list[int]) -> list[Message]:
    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(np.zeros(4, dtype=np.float32))}),
            "config": ConfigRecord({"server-round": server_round}),
        }
    )
    return [
        Message(
            content=content,
            message_type=MessageType.TRAIN,
            dst_node_id=n,
            group_id=str(server_round),
        )
        for n in nodes
    ]


@pytest.mark.usefixtures("task_identity")
def test_fixed_frequency_forces_exactly_one_attacker_into_its_rounds() -> None:
    """Spec check 11: rounds t = 5, 10, ... hold the attacker plus m - 1 honest clients,
    whatever the strategy sampled; other rounds hold m honest clients."""
    k, m, attacker = 20, 10, 3
    inner = EchoGrid(k)
    schedule = FixedFrequency([attacker], every_k=5, start_round=5)
    grid = AttackGrid(
        inner, dict(inner.node_partition), schedule, num_partitions=k, clients_per_round=m, seed=0
    )
    rng = np.random.default_rng(1)
    nodes = list(inner.node_partition)
    for server_round in range(1, 31):
        sampled = [nodes[i] for i in rng.choice(k, m, replace=False)]  # the strategy's sample
        replies = list(grid.send_and_receive(_instructions(inner, server_round, sampled)))
        sent = inner.sent[-1]
        assert len(sent) == len(set(sent)) == m == len(replies)
        expected = 1 if server_round % 5 == 0 else 0
        assert sent.count(attacker) == expected, (server_round, sent)
        # Norms are measured per reply: the update is (p + 1) in each of 4 entries.
        observed = grid.rounds[server_round]
        assert sorted(observed.partitions) == sorted(sent)
        for p, norm in zip(observed.partitions, observed.norms, strict=True):
            assert norm == pytest.approx(2.0 * (p + 1))
    # Re-targeting is seeded: the same round gives the same participants.
    assert grid.participants(10) == grid.participants(10)


@pytest.mark.usefixtures("task_identity")
def test_all_clients_rounds_are_left_alone() -> None:
    inner = EchoGrid(6)
    schedule = FixedFrequency([2], every_k=1, start_round=1)
    grid = AttackGrid(
        inner, dict(inner.node_partition), schedule, num_partitions=6, clients_per_round=6, seed=0
    )
    messages = _instructions(inner, 1, list(inner.node_partition))
    assert grid.retarget(messages, 1) is messages


def test_plan_dataclass_is_picklable(edge_npz: Path) -> None:
    """The plan travels to the Ray actors inside the task."""
    import pickle

    plan = plan_threat(ExperimentTask(_npz_config(edge_npz)))
    again = pickle.loads(pickle.dumps(plan))
    assert dataclasses.asdict(again.attack) == dataclasses.asdict(plan.attack)
    assert again.attackers == plan.attackers
