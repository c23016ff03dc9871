"""The Flower layer in process: client mod + SecAggPlus over a fake Grid (no Ray).

The fake Grid delivers each message to the node's mod, which wraps a tiny train handler whose
update is known, so the secure aggregate can be checked against the plain weighted mean.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    RecordDict,
)
from flwr.serverapp.strategy import FedAvg, Krum
from secagg_local_grid import SIZE, LocalGrid, arrays_of, flat

from flower_suite.clients.secagg_mod import RECORD_KEY, STATE_KEY, make_secagg_mod, secagg_mod
from flower_suite.secagg import SecAggError, SeededRandomSource, Stage
from flower_suite.strategies.robust_rules import FedMedian
from flower_suite.strategies.secagg import SecAggPlus


@pytest.fixture
def setup(task_identity: None):
    rng = np.random.default_rng(0)
    nodes = {100 + i: rng.normal(0, 0.05, SIZE) for i in range(6)}
    weights = {100 + i: int(w) for i, w in enumerate(rng.integers(5, 40, 6))}
    grid = LocalGrid(nodes, weights)
    start = rng.normal(0, 1, SIZE)
    return grid, arrays_of(start), nodes, weights


def _strategy(**kw: object) -> SecAggPlus:
    defaults: dict[str, object] = dict(
        num_shares=5,
        reconstruction_threshold=3,
        clipping_range=0.5,
        quantization_range=2**16,
        max_weight=100,
        source=SeededRandomSource(1),
    )
    defaults.update(kw)
    return SecAggPlus(FedAvg(min_available_nodes=6, min_train_nodes=6), **defaults)  # type: ignore[arg-type]


def _expected(start: ArrayRecord, nodes, weights, members) -> np.ndarray:
    w = np.array([weights[n] for n in members], dtype=np.float64)
    updates = np.stack([np.clip(nodes[n], -0.5, 0.5) for n in members])
    return flat(start) + (w[:, None] * updates).sum(0) / w.sum()


def test_round_gives_the_weighted_mean_and_no_plaintext_leaves_a_client(setup) -> None:
    grid, start, nodes, weights = setup
    strategy = _strategy()
    arrays, metrics = strategy.train_round(grid, 1, start, ConfigRecord({"lr": 0.1}))
    assert arrays is not None and metrics is not None
    step = 1.0 / (2**16 - 1)
    expected = _expected(start, nodes, weights, list(nodes))
    assert np.abs(flat(arrays) - expected).max() < step + 1e-6  # Δ/2 plus float32 storage
    assert strategy.records[1].total_weight == sum(weights.values())
    assert metrics["secagg-survivors"] == 6
    assert "train-loss" not in metrics  # metrics stay on the client by default
    # nothing but protocol records (and allowed info) came back: no ArrayRecord, no metrics
    for reply in grid.seen_replies:
        assert not reply.content.array_records and not reply.content.metric_records
        assert set(reply.content.config_records) <= {RECORD_KEY}
    # the client kept its protocol state in Context.state as plain data
    assert STATE_KEY in grid.contexts[100].state.config_records
    record = strategy.records[1]
    assert sorted(record.survivors) == sorted(nodes) and not record.aborted


@pytest.mark.parametrize("stage", [Stage.SETUP, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.UNMASK])
@pytest.mark.parametrize("mode", ["crash", "vanish"])
def test_a_dropout_at_any_stage_is_survived(setup, stage: Stage, mode: str) -> None:
    grid, start, nodes, weights = setup
    grid.fail = lambda node, s: mode if (node == 103 and s == stage) else ""
    strategy = _strategy(num_shares=1.0, reconstruction_threshold=4)
    arrays, _ = strategy.train_round(grid, 1, start, ConfigRecord({}))
    assert arrays is not None
    members = [n for n in nodes if not (n == 103 and stage != Stage.UNMASK)]
    expected = _expected(start, nodes, weights, members)
    assert np.abs(flat(arrays) - expected).max() < 1.0 / (2**16 - 1) + 1e-6
    record = strategy.records[1]
    if stage == Stage.UNMASK:
        assert 103 in record.survivors and record.dropped["unmask"] == [103]
    else:
        assert 103 not in record.survivors
    if mode == "crash":
        assert record.errors and record.errors[0][0] == 103


def test_too_many_dropouts_abort_and_leave_the_model_unchanged(setup) -> None:
    grid, start, _, _ = setup
    grid.fail = lambda node, s: "crash" if (node >= 103 and s == Stage.MASKED_INPUT) else ""
    strategy = _strategy(num_shares=1.0, reconstruction_threshold=4)
    arrays, metrics = strategy.train_round(grid, 1, start, ConfigRecord({}))
    assert arrays is None and metrics is None
    assert "masked_input" in strategy.records[1].aborted
    assert "survivors=3" in strategy.records[1].aborted


def test_a_client_discards_a_tampered_share_and_stays(setup) -> None:
    grid, start, nodes, weights = setup
    original = grid.send_and_receive

    def tamper(messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        for msg in messages:
            record = msg.content.config_records.get(RECORD_KEY)
            if (
                record is not None
                and record["stage"] == Stage.MASKED_INPUT
                and msg.metadata.dst_node_id == 101
            ):
                blob = bytearray(record["ciphertexts"])  # type: ignore[arg-type]
                blob[-1] ^= 0xFF
                record["ciphertexts"] = bytes(blob)
        return original(messages, timeout=timeout)

    grid.send_and_receive = tamper  # type: ignore[method-assign]
    strategy = _strategy(num_shares=1.0, reconstruction_threshold=4)
    arrays, _ = strategy.train_round(grid, 1, start, ConfigRecord({}))
    record = strategy.records[1]
    # 101 discards the one share that fails authentication and stays in the round; the
    # server notices at unmasking (101 holds no share of that sender) and reconstructs the
    # sender's secrets from the other holders' shares
    assert 101 in record.survivors and len(record.survivors) == 6
    assert [node for node, stage, _ in record.errors] == [101]
    assert "no valid share" in record.errors[0][2]
    assert np.abs(flat(arrays) - _expected(start, nodes, weights, list(nodes))).max() < 1e-4


def test_mod_refuses_plain_train_messages_and_passes_others(task_identity: None) -> None:
    ctx = Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config={})
    plain = Message(
        content=RecordDict({"config": ConfigRecord({})}),
        dst_node_id=5,
        message_type=MessageType.TRAIN,
    )
    with pytest.raises(SecAggError, match="refusing a plain 'train' message"):
        secagg_mod(plain, ctx, lambda m, c: m)
    evaluate = Message(
        content=RecordDict({"config": ConfigRecord({})}),
        dst_node_id=5,
        message_type=MessageType.EVALUATE,
    )
    assert secagg_mod(evaluate, ctx, lambda m, c: "handled") == "handled"  # type: ignore[comparison-overlap]
    lenient = make_secagg_mod(require_secagg=False)
    assert lenient(plain, ctx, lambda m, c: "trained") == "trained"  # type: ignore[comparison-overlap]


def test_robust_strategies_and_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="only the sum"):
        SecAggPlus(Krum())
    with pytest.raises(ValueError, match="only the sum"):
        SecAggPlus(FedMedian())
    with pytest.raises(ValueError, match="clipping_range"):
        SecAggPlus(FedAvg(), clipping_range=0.0)
    with pytest.raises(RuntimeError, match="train_round"):
        SecAggPlus(FedAvg()).configure_train(1, ArrayRecord(), ConfigRecord(), None)  # type: ignore[arg-type]
