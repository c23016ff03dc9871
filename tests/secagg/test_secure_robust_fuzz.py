"""Property-based fuzzing of ``SecureRobust.train_round``: one client's protocol message is
mutated on the wire (the mutations of ``test_secagg_fuzz.py``) in a round of 9 clients in
three groups of 3, with the median over the group means.

Allowed outcomes: the groups without the victim are aggregated exactly and never abort; the
victim's group either aggregates exactly over its survivors (the honest ones, plus the victim
if its mutated message was harmless) or aborts and is left out; the model is the coordinate
median of the completed groups' exact means. Nothing raises. CI runs this derandomized.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from flwr.app import ConfigRecord
from hypothesis import event, given, settings
from secagg_harness import CLIP, LEVELS, STEP, make_grid, to_flat
from test_secagg_fuzz import (
    FLOWER_EXTRA,
    FLOWER_WRONG_VALUES,
    MESSAGES,
    FlowerLog,
    Mutation,
    _kinds,
    _recording,
    mutate,
    mutations,
)

from flower_suite.flower_compat import message_identity
from flower_suite.secagg import SeededRandomSource, Stage
from flower_suite.strategies.robust_rules import FedMedian
from flower_suite.strategies.secure_robust import SecureRobust

N = 9


def _strategy(source: SeededRandomSource) -> SecureRobust:
    return SecureRobust(
        FedMedian(min_available_nodes=N, min_train_nodes=N),
        3,
        seed=4,
        clipping_range=CLIP,
        quantization_range=LEVELS,
        max_weight=100,
        stochastic_rounding=False,
        source=source,
    )


@functools.cache
def _earlier_round() -> FlowerLog:
    """Every record of a valid round with other round ids and keys (for replays)."""
    log: FlowerLog = {}
    grid, start = make_grid(seed=3, n=N)
    grid.on_request, grid.on_reply = _recording(log, "down"), _recording(log, "up")
    with message_identity():
        arrays, _ = _strategy(SeededRandomSource(2)).train_round(grid, 1, start, ConfigRecord({}))
    assert arrays is not None
    return log


def _group_mean(grid: Any, members: list[int]) -> np.ndarray:
    w = np.array([grid.weights[n] for n in members], dtype=np.float64)
    updates = np.stack([np.clip(grid.updates[n], -CLIP, CLIP) for n in members])
    return (w[:, None] * updates).sum(0) / w.sum()


@settings(max_examples=40)
@given(m=mutations)
def test_secure_robust_round_survives_one_mutated_message(m: Mutation) -> None:
    with message_identity():
        _round_with(m)


def _round_with(m: Mutation) -> None:
    stage, direction = MESSAGES[m.message]
    wire_stage = Stage.SETUP if stage == Stage.ADVERTISE_KEYS else stage
    kinds = _kinds(stage, direction)
    if (stage, direction) == (Stage.MASKED_INPUT, "down"):
        kinds.update(FLOWER_EXTRA)
    grid, start = make_grid(seed=3, n=N)
    victim = sorted(grid.updates)[(m.victim - 1) % N]
    changed: list[str] = []

    def hook(way: str):  # type: ignore[no-untyped-def]
        def tamper(node: int, msg_stage: int, data: dict[str, Any]):  # type: ignore[no-untyped-def]
            if (node, msg_stage, way) != (victim, wire_stage, direction):
                return data
            replay = _earlier_round().get((node, msg_stage, way))
            out, name = mutate(data, kinds, m, replay, FLOWER_WRONG_VALUES)
            changed.append(name)
            return out

        return tamper

    grid.on_request, grid.on_reply = hook("down"), hook("up")
    strategy = _strategy(SeededRandomSource(1))
    arrays, _ = strategy.train_round(grid, 1, start, ConfigRecord({}))  # never raises
    record = strategy.records[1]
    bad = next(i for i, group in enumerate(record.groups, 1) if victim in group)
    event(f"victim group {'aborted' if bad in record.aborted_groups else 'completed'}")
    assert set(record.aborted_groups) <= {bad}  # other groups are untouched
    means = []
    for index, (group, sub) in enumerate(zip(record.groups, record.group_records, strict=True), 1):
        if index in record.aborted_groups:
            continue
        assert set(group) - {victim} <= set(sub.survivors)
        means.append(_group_mean(grid, sub.survivors))
    assert arrays is not None  # at least two groups always complete
    payload = changed == ["masked"] and direction == "up" and m.op in ("flip", "forge")
    if payload and bad not in record.aborted_groups:
        return  # in-range garbage in one's own input: undetectable, outvoted by the median
    expected = to_flat(start) + np.median(np.stack(means), axis=0)
    assert np.abs(to_flat(arrays) - expected).max() <= STEP / 2 + 1e-6
