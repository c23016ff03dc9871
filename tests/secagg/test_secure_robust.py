"""SecureRobust over the in-process fake Grid: exact group sums, outvoted Byzantine groups,
per-group aborts, one round trip per stage, refusals (no Ray)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy import FedMedian as FlowerMedian
from secagg_local_grid import SIZE, LocalGrid, arrays_of, flat

from flower_suite.secagg import SeededRandomSource, Stage
from flower_suite.secagg.groups import assign_groups
from flower_suite.strategies.contract import ContractError, ExperimentSizes
from flower_suite.strategies.detox import DETOX
from flower_suite.strategies.krum_family import Krum
from flower_suite.strategies.robust_rules import FedMedian
from flower_suite.strategies.secagg import SecAggPlus
from flower_suite.strategies.secure_robust import SecureRobust

CLIP = 0.5
STEP = 1.0 / (2**16 - 1)  # quantization step of the mean with c = 0.5, T = 2^16
BYZANTINE = 105


class SpyMedian(FedMedian):
    """FedMedian that keeps the group replies it was handed (to check each group's sum)."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.seen: list[Message] = []

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        self.seen = list(replies)
        return super().aggregate_train(server_round, self.seen)


def _grid(n: int = 13, byzantine: bool = False) -> tuple[LocalGrid, ArrayRecord]:
    rng = np.random.default_rng(0)
    nodes = {100 + i: rng.normal(0, 0.05, SIZE) for i in range(n)}
    if byzantine:
        nodes[BYZANTINE] = np.full(SIZE, 10.0)  # clipped to +CLIP by its own secure client
    weights = {100 + i: int(w) for i, w in enumerate(rng.integers(5, 40, n))}
    return LocalGrid(nodes, weights), arrays_of(rng.normal(0, 1, SIZE))


def _secure(inner: object, n: int = 13, **kw: object) -> SecureRobust:
    options: dict[str, object] = dict(
        clipping_range=CLIP,
        quantization_range=2**16,
        max_weight=100,
        seed=7,
        source=SeededRandomSource(1),
    )
    options.update(kw)
    return SecureRobust(inner, 4, **options)  # type: ignore[arg-type]


def _median(n: int = 13) -> SpyMedian:
    return SpyMedian(min_available_nodes=n, min_train_nodes=n)


def _group_mean(grid: LocalGrid, members: list[int]) -> np.ndarray:
    w = np.array([grid.weights[n] for n in members], dtype=np.float64)
    updates = np.stack([np.clip(grid.updates[n], -CLIP, CLIP) for n in members])
    return (w[:, None] * updates).sum(0) / w.sum()


def test_each_group_reply_is_its_members_weighted_mean(task_identity: None) -> None:
    grid, start = _grid()
    inner = _median()
    strategy = _secure(inner)
    arrays, metrics = strategy.train_round(grid, 1, start, ConfigRecord({}))
    assert arrays is not None and metrics is not None
    record = strategy.records[1]
    assert record.groups == assign_groups(sorted(grid.updates), 4, seed=7, server_round=1)
    assert [len(g) for g in record.groups] == [5, 4, 4]
    means = []
    for index, (reply, members) in enumerate(zip(inner.seen, record.groups, strict=True), 1):
        assert reply.metadata.src_node_id == index
        got = flat(reply.content["arrays"]) - flat(start)
        assert np.abs(got - _group_mean(grid, members)).max() < STEP + 1e-6
        weight = reply.content.metric_records["metrics"]["num-examples"]
        assert weight == sum(grid.weights[n] for n in members)
        means.append(got)
    # the rule ran over the group means: the result is their coordinate-wise median
    expected = flat(start) + np.median(np.stack(means), axis=0)
    assert np.abs(flat(arrays) - expected).max() < 1e-6
    assert metrics["secure-groups"] == 3 and metrics["secure-groups-aborted"] == 0
    # no client sent anything but protocol records: no update, no metric in clear
    for reply in grid.seen_replies:
        assert not reply.content.array_records and not reply.content.metric_records


def test_all_groups_share_four_round_trips(task_identity: None) -> None:
    grid, start = _grid()
    calls: list[int] = []
    send = grid.send_and_receive

    def counting(messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        batch = list(messages)
        calls.append(len(batch))
        return send(batch, timeout=timeout)

    grid.send_and_receive = counting  # type: ignore[method-assign]
    _secure(_median()).train_round(grid, 1, start, ConfigRecord({}))
    assert calls == [13, 13, 13, 13]
    groups = {m.metadata.group_id for m in grid.seen_replies}
    assert groups == {"1.1", "1.2", "1.3"}


def test_a_byzantine_clients_group_is_outvoted(task_identity: None) -> None:
    grid, start = _grid(byzantine=True)
    plain = SecAggPlus(
        FedAvg(min_available_nodes=13, min_train_nodes=13),
        clipping_range=CLIP,
        quantization_range=2**16,
        max_weight=100,
        source=SeededRandomSource(1),
    )
    plain_arrays, _ = plain.train_round(grid, 1, start, ConfigRecord({}))
    grid2, _ = _grid(byzantine=True)
    strategy = _secure(Krum(min_available_nodes=13, min_train_nodes=13, num_malicious_nodes=0))
    arrays, _ = strategy.train_round(grid2, 1, start, ConfigRecord({}))
    assert plain_arrays is not None and arrays is not None
    honest = [n for n in grid.updates if n != BYZANTINE]
    honest_mean = _group_mean(grid, honest)
    # the attacker pushes every coordinate up: measure the mean shift along that direction
    secure_push = float(np.mean(flat(arrays) - flat(start) - honest_mean))
    plain_push = float(np.mean(flat(plain_arrays) - flat(start) - honest_mean))
    assert plain_push > 0.01  # the plain secure mean carries the attacker's push
    assert abs(secure_push) < plain_push / 3
    record = strategy.records[1]
    assert BYZANTINE not in record.selected and len(record.selected_groups) == 1
    bad_group = next(i for i, g in enumerate(record.groups, 1) if BYZANTINE in g)
    assert bad_group not in record.selected_groups


def test_a_group_below_its_threshold_is_left_out_and_the_rest_aggregated(
    task_identity: None,
) -> None:
    grid, start = _grid()
    groups = assign_groups(sorted(grid.updates), 4, seed=7, server_round=1)
    lost = groups[1][:2]  # two of four: below the group's threshold of 3
    grid.fail = lambda node, stage: "crash" if node in lost and stage == Stage.MASKED_INPUT else ""
    inner = _median()
    strategy = _secure(inner)
    arrays, metrics = strategy.train_round(grid, 1, start, ConfigRecord({}))
    assert arrays is not None and metrics is not None
    record = strategy.records[1]
    assert list(record.aborted_groups) == [2] and "survivors=2" in record.aborted_groups[2]
    assert metrics["secure-groups-aborted"] == 1
    assert {node for node, _ in record.rejected} == set(groups[1])
    assert [r.metadata.src_node_id for r in inner.seen] == [1, 3]
    expected = np.median(np.stack([_group_mean(grid, groups[0]), _group_mean(grid, groups[2])]), 0)
    assert np.abs(flat(arrays) - flat(start) - expected).max() < STEP + 1e-6


def test_a_dropout_inside_a_group_is_survived_by_that_group(task_identity: None) -> None:
    grid, start = _grid()
    groups = assign_groups(sorted(grid.updates), 4, seed=7, server_round=1)
    gone = groups[0][0]
    grid.fail = lambda node, stage: "vanish" if node == gone and stage == Stage.SHARE_KEYS else ""
    inner = _median()
    strategy = _secure(inner)
    strategy.train_round(grid, 1, start, ConfigRecord({}))
    record = strategy.records[1]
    assert not record.aborted_groups
    assert gone not in record.group_records[0].survivors
    got = flat(inner.seen[0].content["arrays"]) - flat(start)
    assert np.abs(got - _group_mean(grid, groups[0][1:])).max() < STEP + 1e-6


def test_every_group_aborting_skips_the_round(task_identity: None) -> None:
    grid, start = _grid()
    grid.fail = lambda node, stage: "crash" if stage == Stage.SETUP else ""
    strategy = _secure(_median())
    assert strategy.train_round(grid, 1, start, ConfigRecord({})) == (None, None)
    assert strategy.records[1].skipped.startswith("every group")
    assert len(strategy.records[1].aborted_groups) == 3


def test_too_few_clients_for_one_group_skip_the_round(task_identity: None) -> None:
    grid, start = _grid(n=3)
    strategy = _secure(FedMedian(min_available_nodes=3, min_train_nodes=3))
    assert strategy.train_round(grid, 1, start, ConfigRecord({})) == (None, None)
    assert "cannot form a group of 4" in strategy.records[1].skipped


def test_sizes_are_checked_with_group_means_as_the_rules_inputs() -> None:
    krum = _secure(Krum(num_malicious_nodes=1))  # Krum f=1 needs 5 means
    with pytest.raises(ContractError, match="3 group means") as err:
        krum.check_sizes(ExperimentSizes(num_clients=20, clients_per_round=12))
    assert err.value.field == "secagg.group_size"
    krum.check_sizes(ExperimentSizes(num_clients=40, clients_per_round=20))
    with pytest.raises(ContractError, match="cannot form a group"):
        _secure(FedMedian()).check_sizes(ExperimentSizes(num_clients=20, clients_per_round=3))
    assert krum.min_replies() == 20


def test_strategies_that_need_individual_replies_or_own_rounds_are_refused() -> None:
    with pytest.raises(ValueError, match="own round structure"):
        SecureRobust(SecAggPlus(FedAvg()), 4)
    with pytest.raises(ValueError, match="assigns data"):
        SecureRobust(DETOX(redundancy=3), 4)
    with pytest.raises(ValueError, match=">= 3"):
        SecureRobust(FedMedian(), 2)
    with pytest.raises(ValueError, match="clipping_range"):
        SecureRobust(FedMedian(), 4, clipping_range=-1.0)
    with pytest.raises(RuntimeError, match="train_round"):
        SecureRobust(FedMedian(), 4).configure_train(1, ArrayRecord(), ConfigRecord(), None)  # type: ignore[arg-type]


def test_flowers_own_median_takes_the_group_means(task_identity: None) -> None:
    grid, start = _grid()
    strategy = _secure(FlowerMedian(min_available_nodes=13, min_train_nodes=13))
    arrays, metrics = strategy.train_round(grid, 1, start, ConfigRecord({}))
    assert arrays is not None and metrics is not None
    record = strategy.records[1]
    means = np.stack([_group_mean(grid, g) for g in record.groups])
    expected = flat(start) + np.median(means, axis=0)
    assert np.abs(flat(arrays) - expected).max() < STEP + 1e-6
    assert metrics["secure-groups-selected"] == 3  # no records of its own: every mean used
