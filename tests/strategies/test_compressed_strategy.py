"""``Compressed`` around our strategies: real ClientApps over the in-process Grid (no Ray).

Five digits shards (MLP 64-64-10, 4,810 parameters = 19,240 bytes of float32 per reply), lr 0.1.
Measured on this setup (uncompressed FedAvg: 0.84 test accuracy after 3 rounds):
spectral ATOMO s = 2 uploads ~9x fewer bytes, QSGD with 4 bits ~7.4x fewer.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Iterable, Sequence

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg
from flwr.serverapp.strategy import Result, Strategy

from flower_suite.clients import ClientData, make_client_app
from flower_suite.clients.compression_mod import make_compression_mod
from flower_suite.compression import COMPRESSORS, qsgd_message_bytes, spectral_message_bytes
from flower_suite.compression.compressors import dense_message_bytes
from flower_suite.data import load_digits_split
from flower_suite.flower_compat import message_identity
from flower_suite.models import MLP
from flower_suite.simulations.engine.inprocess import InProcessGrid
from flower_suite.strategies import FedAvg, FedMedian, SecAggPlus
from flower_suite.strategies.compressed import Compressed
from flower_suite.strategies.contract import ExperimentSizes, capabilities_of
from flower_suite.training import evaluate
from flower_suite.wire.keys import COMPRESSED_KEY, PAYLOAD_STYPE

TRAIN, TEST = load_digits_split()
NUM_NODES = 5
SHARDS = np.array_split(np.random.default_rng(0).permutation(len(TRAIN)), NUM_NODES)
MODEL_BYTES = 4 * 4810
SHAPES = [(64, 64), (64,), (10, 64), (10,)]  # the MLP's tensors
TRAIN_CONFIG = {"lr": 0.1}


def _data(context) -> ClientData:
    return ClientData(train=TRAIN.subset(SHARDS[int(context.node_config["partition-id"])]))


def _grid(mods: Sequence = ()) -> InProcessGrid:
    app = make_client_app(lambda ctx: MLP(), _data, device="cpu", mods=list(mods))
    return InProcessGrid(app, NUM_NODES)


def _initial() -> ArrayRecord:
    torch.manual_seed(0)
    return ArrayRecord(MLP().state_dict())


def _accuracy(server_round: int, arrays: ArrayRecord) -> MetricRecord:
    model = MLP()
    model.load_state_dict(arrays.to_torch_state_dict())
    return MetricRecord({"acc": evaluate(model, TEST).accuracy})


def _kwargs() -> dict:
    return {
        "fraction_evaluate": 0.0,
        "min_train_nodes": NUM_NODES,
        "min_available_nodes": NUM_NODES,
    }


def _run(strategy: Strategy, mods: Sequence = (), rounds: int = 3) -> Result:
    grid = _grid(mods)
    random.seed(0)  # the strategy samples (and orders) nodes with `random`
    with message_identity():
        return strategy.start(
            grid,
            _initial(),
            num_rounds=rounds,
            train_config=ConfigRecord(TRAIN_CONFIG),
            evaluate_fn=_accuracy,
        )


def _compressed_run(strategy: Strategy, name: str, rounds: int = 3, **params) -> Result:
    compressor = COMPRESSORS.create(name, **params)
    return _run(Compressed(strategy, compressor), [make_compression_mod(compressor)], rounds)


def _final_acc(result: Result) -> float:
    return float(result.evaluate_metrics_serverapp[max(result.evaluate_metrics_serverapp)]["acc"])


def _arrays_equal(a: ArrayRecord, b: ArrayRecord) -> bool:
    return list(a) == list(b) and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def _upload(result: Result) -> tuple[int, int]:
    metrics = result.train_metrics_clientapp.values()
    return (
        sum(int(m["compression-bytes-up"]) for m in metrics),
        sum(int(m["compression-bytes-dense"]) for m in metrics),
    )


@pytest.fixture(scope="module")
def baseline() -> Result:
    return _run(FedAvg(**_kwargs()))


def test_none_equals_the_uncompressed_run_bit_for_bit(baseline: Result) -> None:
    result = _compressed_run(FedAvg(**_kwargs()), "none")
    assert _arrays_equal(result.arrays, baseline.arrays)
    assert result.evaluate_metrics_serverapp == baseline.evaluate_metrics_serverapp
    up, dense = _upload(result)
    messages = sum(dense_message_bytes(s, torch.float32) for s in SHAPES)  # tensors + headers
    assert dense == 3 * NUM_NODES * MODEL_BYTES and up == 3 * NUM_NODES * messages
    for rnd, metrics in result.train_metrics_clientapp.items():
        plain = baseline.train_metrics_clientapp[rnd]
        assert all(metrics[k] == v for k, v in plain.items())


def _spectral_bytes_expected(budget: float) -> float:
    """Expected codec bytes of one MLP reply: E[K] = budget atoms per weight matrix."""
    shapes = [((64, 64), (64, 64)), ((10, 64), (10, 64))]
    fixed = sum(spectral_message_bytes(s, m, 0) for s, m in shapes)
    atoms = sum(4 * budget * sum(m) for _, m in shapes)
    biases = dense_message_bytes((64,), torch.float32) + dense_message_bytes((10,), torch.float32)
    return fixed + atoms + biases


def test_spectral_atomo_trains_with_9x_fewer_bytes(baseline: Result) -> None:
    result = _compressed_run(FedAvg(**_kwargs()), "atomo_spectral", rounds=4, budget=2)
    assert _final_acc(result) > 0.75, result.evaluate_metrics_serverapp
    up, dense = _upload(result)
    expected = 4 * NUM_NODES * _spectral_bytes_expected(2)  # 1,968 B per reply: 9.8x
    assert dense / up > 8 and abs(up / expected - 1) < 0.15, (up, expected)
    assert all(
        m["compression-rejected-replies"] == 0 for m in result.train_metrics_clientapp.values()
    )


def test_qsgd_trains_with_the_expected_bytes(baseline: Result) -> None:
    result = _compressed_run(FedAvg(**_kwargs()), "qsgd", bits=4)
    assert _final_acc(result) >= _final_acc(baseline) - 0.03
    up, dense = _upload(result)
    # at most: 4-bit codes for every entry plus one sign bit each (6.2x fewer than float32)
    bound = 3 * NUM_NODES * sum(qsgd_message_bytes(s, 15, math.prod(s)) for s in SHAPES)
    assert up <= bound and dense / up > 6.2


@pytest.mark.parametrize(
    ("name", "params", "rounds", "threshold"),
    [("qsgd", {"bits": 4}, 3, 0.75), ("atomo_spectral", {"budget": 4}, 4, 0.7)],
)
def test_compression_composes_with_the_median(
    name: str, params: dict, rounds: int, threshold: float
) -> None:
    """Measured: QSGD-4 + median 0.85 after 3 rounds, spectral s=4 + median 0.79 after 4
    (uncompressed median: 0.83 / 0.87)."""
    strategy = FedMedian(**_kwargs())
    result = _compressed_run(strategy, name, rounds=rounds, **params)
    assert _final_acc(result) > threshold, result.evaluate_metrics_serverapp
    assert len(strategy.records) == rounds
    for record in strategy.records.values():
        assert len(record.received) == NUM_NODES and not record.rejected and not record.skipped


class _Spy(FedAvg):
    """FedAvg that remembers which node ids reached its aggregate_train."""

    seen: list[int]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        self.seen = [int(r.metadata.src_node_id) for r in replies]
        return super().aggregate_train(server_round, replies)


def _with_payload(reply: Message, name: str, data: bytes, stype: str = PAYLOAD_STYPE) -> Message:
    payload = reply.content.array_records[COMPRESSED_KEY]
    arrays = {k: a for k, a in payload.items()}
    arrays[name] = Array(dtype="uint8", shape=(len(data),), stype=stype, data=data)
    content = RecordDict({**reply.content, COMPRESSED_KEY: ArrayRecord(arrays)})
    tampered = copy.copy(reply)
    tampered.content = content
    return tampered


def _round_one(strategy: Compressed, grid: InProcessGrid) -> list[Message]:
    random.seed(0)
    config = ConfigRecord({**TRAIN_CONFIG, "server-round": 1})
    messages = list(strategy.configure_train(1, _initial(), config, grid))
    return list(grid.send_and_receive(messages))


def test_bad_payloads_are_excluded_and_the_round_aggregates_the_rest(
    task_identity: None, caplog: pytest.LogCaptureFixture
) -> None:
    compressor = COMPRESSORS.create("atomo_spectral", budget=2)
    grid = _grid([make_compression_mod(compressor)])
    spy = _Spy(**_kwargs())
    strategy = Compressed(spy, compressor)
    replies = _round_one(strategy, grid)
    weight = replies[0].content.array_records[COMPRESSED_KEY]["net.1.weight"].data
    bad = [
        _with_payload(replies[0], "net.1.weight", weight[:-1]),  # truncated
        _with_payload(replies[1], "net.1.weight", b"XX" + weight[2:]),  # corrupted magic
        _with_payload(replies[2], "net.1.weight", weight + bytes(100_000)),  # oversized
        _with_payload(replies[3], "net.3.bias", weight, stype="numpy.ndarray"),  # wrong stype
    ]
    with caplog.at_level("WARNING"):
        arrays, metrics = strategy.aggregate_train(1, [*bad, replies[4]])
    record = strategy.compression_records[1]
    reasons = dict(record.rejected)
    assert len(reasons) == 4 and record.decoded == [replies[4].metadata.src_node_id]
    assert "bytes" in reasons[replies[0].metadata.src_node_id]
    assert "oversized" in reasons[replies[2].metadata.src_node_id]
    assert spy.seen == [replies[4].metadata.src_node_id]  # the wrapped rule saw only good ones
    assert arrays is not None and metrics is not None
    assert metrics["compression-rejected-replies"] == 4
    # the good reply alone, decoded by a fresh wrapper: the same aggregate
    fresh = Compressed(FedAvg(**_kwargs()), compressor)
    with message_identity():
        random.seed(0)
        list(fresh.configure_train(1, _initial(), ConfigRecord(TRAIN_CONFIG), grid))
    alone, _ = fresh.aggregate_train(1, [replies[4]])
    assert alone is not None and _arrays_equal(arrays, alone)


def test_a_plain_reply_is_excluded(task_identity: None) -> None:
    """A client without the mod (uncompressed "arrays") is excluded, not decoded."""
    compressor = COMPRESSORS.create("none")
    strategy = Compressed(FedAvg(**_kwargs()), compressor)
    replies = _round_one(strategy, _grid())
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is None and metrics is not None
    assert metrics["compression-rejected-replies"] == NUM_NODES
    assert all("compressed-update" in why for _, why in strategy.compression_records[1].rejected)


def test_contract_refuses_secure_aggregation_and_delegates_sizes() -> None:
    wrapped = Compressed(FedMedian(), "qsgd", compressor_kwargs={"bits": 2})
    capabilities = capabilities_of(wrapped)
    assert not capabilities.secure_aggregation and capabilities.needs_sent_model
    with pytest.raises(ValueError, match="inspects individual updates"):
        SecAggPlus(Compressed(FedAvg(), "none"))
    with pytest.raises(ValueError, match="own round structure"):
        Compressed(SecAggPlus(FedAvg()), "none")
    assert wrapped.min_replies() == FedMedian().min_replies()
    wrapped.check_sizes(ExperimentSizes(num_clients=10, clients_per_round=5))
    with pytest.raises(ValueError, match="compressor_kwargs"):
        Compressed(FedAvg(), COMPRESSORS.create("none"), compressor_kwargs={"budget": 1})
    with pytest.raises(ValueError, match="max_message_factor"):
        Compressed(FedAvg(), "none", max_message_factor=0.5)


def test_flowers_own_fedavg_can_be_wrapped() -> None:
    """Flower's FedAvg (which reads replies itself) aggregates the rebuilt replies."""
    result = _compressed_run(FlowerFedAvg(**_kwargs()), "qsgd", rounds=2, bits=4)
    assert _final_acc(result) > 0.7, result.evaluate_metrics_serverapp
    assert all(m["compression-ratio"] > 6.2 for m in result.train_metrics_clientapp.values())
