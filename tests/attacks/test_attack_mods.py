"""Client-side attack adapters, through real Messages and a real make_client_app ClientApp."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from flower_suite.attacks import (
    ATTACK_INFO_KEY,
    FixedFrequency,
    PGDTrain,
    byzantine_mod,
    l2_distance,
    make_attacker_app,
    poisoned_data_fn,
)
from flower_suite.clients import ClientData, make_client_app
from flower_suite.data import ArrayDataset, load_digits_split
from flower_suite.models import MLP

TRAIN, TEST = load_digits_split()
CLEAN = ClientData(train=TRAIN.subset(np.arange(100)), test=TEST.subset(np.arange(50)))
EDGE = ArrayDataset(TRAIN.x[200:260], np.ones(60, dtype=np.int64), 10, name="edge")


def _context(partition_id: int) -> Context:
    return Context(
        run_id=1,
        node_id=7,
        node_config={"partition-id": partition_id, "num-partitions": 10},
        state=RecordDict(),
        run_config={},
    )


def _global() -> MLP:
    torch.manual_seed(0)
    return MLP()


def _message(message_type: str = MessageType.TRAIN, **config: object) -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord(_global().state_dict()),
            "config": ConfigRecord({"server-round": 3, "lr": 0.1, **config}),  # type: ignore[dict-item]
        }
    )
    return Message(content=content, dst_node_id=7, message_type=message_type)


def _state(reply: Message) -> dict[str, torch.Tensor]:
    return reply.content["arrays"].to_torch_state_dict()


def _honest_app():  # type: ignore[no-untyped-def]
    return make_client_app(lambda ctx: MLP(), lambda ctx: CLEAN, device="cpu")


def test_byzantine_mod_sign_flips_only_the_attacker(task_identity: None) -> None:
    """Attacker reply = global - (honest reply - global); partition 1 stays honest."""
    # Prepare
    honest = _honest_app()
    app = make_client_app(
        lambda ctx: MLP(), lambda ctx: CLEAN, device="cpu", mods=[byzantine_mod("sign_flip", [0])]
    )
    glob = _global().state_dict()
    # Execute
    clean_reply = honest(_message(), _context(0))
    attacked = app(_message(), _context(0))
    bystander = app(_message(), _context(1))
    # Assert
    for key, w in glob.items():
        expected = w - (_state(clean_reply)[key] - w)
        torch.testing.assert_close(_state(attacked)[key], expected, rtol=1e-6, atol=1e-6)
    info = attacked.content.config_records[ATTACK_INFO_KEY]
    assert info["attacker"] is True and info["attack"] == "sign_flip" and info["server-round"] == 3
    assert ATTACK_INFO_KEY not in bystander.content.config_records
    assert attacked.content["metrics"]["num-examples"] == 100


def test_byzantine_mod_respects_the_schedule_and_leaves_evaluate_alone(
    task_identity: None,
) -> None:
    """Round 3 is no attack round for every_k=2: the reply equals the honest one."""
    mod = byzantine_mod("constant", FixedFrequency([0], every_k=2), value=-1.0)
    app = make_client_app(lambda ctx: MLP(), lambda ctx: CLEAN, device="cpu", mods=[mod])
    honest_state = _state(_honest_app()(_message(), _context(0)))
    quiet = app(_message(), _context(0))
    for key, value in honest_state.items():
        torch.testing.assert_close(_state(quiet)[key], value, rtol=0, atol=0)
    loud = app(_message(**{"server-round": 4}), _context(0))
    glob = _global().state_dict()
    for key, w in glob.items():
        torch.testing.assert_close(_state(loud)[key], w - 1.0)
    evaluation = app(_message(MessageType.EVALUATE, **{"server-round": 4}), _context(0))
    assert "arrays" not in evaluation.content
    assert ATTACK_INFO_KEY not in evaluation.content.config_records


def test_byzantine_mod_refuses_omniscient_attacks() -> None:
    with pytest.raises(ValueError, match="ByzantineInjector"):
        byzantine_mod("alie", [0])


def test_black_box_attacker_trains_on_the_mix(task_identity: None) -> None:
    """make_attacker_app: the attacker reports |D'| = 80 (40 edge + 40 clean), is marked;
    its evaluation and other partitions stay honest."""
    app = make_attacker_app(
        lambda ctx: MLP(),
        lambda ctx: CLEAN,
        [0],
        poison="edge_mix",
        poison_params={"edge": EDGE, "ratio": 0.5, "size": 80},
        device="cpu",
    )
    attacked = app(_message(), _context(0))
    assert attacked.content["metrics"]["num-examples"] == 80
    assert attacked.content.config_records[ATTACK_INFO_KEY]["attack"] == "black-box"
    honest = app(_message(), _context(1))
    assert honest.content["metrics"]["num-examples"] == 100
    assert ATTACK_INFO_KEY not in honest.content.config_records
    evaluation = app(_message(MessageType.EVALUATE), _context(0))
    assert evaluation.content["metrics"]["num-examples"] == 50
    assert ATTACK_INFO_KEY not in evaluation.content.config_records


def test_pgd_attacker_stays_in_the_ball_and_replacement_boosts(task_identity: None) -> None:
    """PGD: ||w_a - w|| <= delta; with n-s-estimate in the config the reply is
    w + (n_S / n_a)(w_a - w) exactly (same seed, same PGD model)."""
    radius, n_s = 0.05, 400.0

    def app_with(pgd: PGDTrain):  # type: ignore[no-untyped-def]
        return make_attacker_app(lambda ctx: MLP(), lambda ctx: CLEAN, [0], pgd=pgd, device="cpu")

    glob = _global().state_dict()
    unconstrained = _honest_app()(_message(), _context(0))
    assert l2_distance(_state(unconstrained), glob) > 2 * radius  # the ball does bind
    plain = app_with(PGDTrain(radius=radius))(_message(), _context(0))
    assert l2_distance(_state(plain), glob) <= radius
    assert plain.content.config_records[ATTACK_INFO_KEY]["attack"] == "pgd"
    boosted = app_with(PGDTrain(radius=radius))(_message(**{"n-s-estimate": n_s}), _context(0))
    assert boosted.content.config_records[ATTACK_INFO_KEY]["attack"] == "pgd-replacement"
    scale = n_s / 100
    for key, w in glob.items():
        expected = w + scale * (_state(plain)[key] - w)
        torch.testing.assert_close(_state(boosted)[key], expected, rtol=1e-5, atol=1e-6)


def test_round_dependent_poison_needs_the_context_mod(task_identity: None) -> None:
    """Without attack_context_mod a fixed-frequency data_fn cannot know the round."""
    data_fn = poisoned_data_fn(lambda ctx: CLEAN, FixedFrequency([0], every_k=1), "label_flip")
    app = make_client_app(lambda ctx: MLP(), data_fn, device="cpu")
    with pytest.raises(ValueError, match="attack_context_mod"):
        app(_message(), _context(0))


def test_poisoned_data_fn_flips_labels_for_attackers_only() -> None:
    data_fn = poisoned_data_fn(lambda ctx: CLEAN, [2], "label_flip")
    poisoned = data_fn(_context(2))
    np.testing.assert_array_equal(poisoned.train.y, 9 - CLEAN.train.y)
    assert poisoned.test is CLEAN.test
    assert data_fn(_context(1)) is CLEAN
