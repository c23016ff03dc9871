"""FedMA strategy: round structure, bytes, widths, reconstruction, failures (no Ray).

Spec ``shared/spec/fedma.md`` §5-§9 and check 8 of §12, run through an in-process Grid that
calls a real ClientApp with real Flower Messages.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from fedma_fixtures import federation, mlp
from flwr.app import Array, ArrayRecord, MetricRecord
from torch import nn

from flower_suite.clients.fedma_client import ASSIGNMENT_KEY, FEDMA_EVALUATE, FEDMA_TRAIN
from flower_suite.flower_compat import message_identity
from flower_suite.matching.architecture import state_shapes
from flower_suite.models import DigitsCNN, ResNet18
from flower_suite.strategies import STRATEGIES, FedMA
from flower_suite.training import evaluate

PARAMS = sum(int(np.prod(s)) for s in state_shapes(mlp().state_dict()).values())


def _initial() -> ArrayRecord:
    torch.manual_seed(0)
    return ArrayRecord(mlp().state_dict())


def _run(num_rounds: int = 2, gamma0: float = 1e-3, **kwargs):
    grid, _, test = federation(
        kwargs.pop("num_clients", 4),
        fail=kwargs.pop("fail", None),
        tamper=kwargs.pop("tamper", None),
    )
    strategy = FedMA(model_fn=mlp, fraction_evaluate=0.0, gamma0=gamma0, **kwargs)
    accuracy: dict[int, float] = {}

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model = strategy.model_for_arrays(arrays)
        accuracy[server_round] = evaluate(model, test, device=torch.device("cpu")).accuracy
        return MetricRecord({"acc": accuracy[server_round]})

    result = strategy.start(grid, _initial(), num_rounds=num_rounds, evaluate_fn=evaluate_fn)
    return strategy, grid, result, accuracy


@pytest.fixture(scope="module")
def two_rounds(request: pytest.FixtureRequest):
    """One 2-round run (4 clients, blobs, 3-layer MLP, gamma0=7 so layers grow), shared."""
    with message_identity():
        yield _run(2, gamma0=7.0)


def test_one_round_is_n_communication_rounds(two_rounds) -> None:
    """Each FedMA round sends exactly N = 3 train.fedma exchanges to all 4 clients (§12.8)."""
    strategy, grid, result, accuracy = two_rounds
    assert strategy.num_steps == 3
    assert len(grid.sent) == 2 * 3
    for exchange in grid.sent:
        assert len(exchange) == 4
        assert {m.metadata.message_type for m in exchange} == {FEDMA_TRAIN}
    assert sorted(accuracy) == [0, 1, 2]  # evaluate_fn before round 1 and after each round
    assert sorted(result.train_metrics_clientapp) == [1, 2]
    assert strategy.locate(1) == (1, 0) and strategy.locate(3) == (1, 2)
    assert strategy.locate(4) == (2, 0)


def test_learns_far_above_chance(two_rounds) -> None:
    """Global test accuracy > chance + 20 points after each round (§12.8)."""
    _, _, _, accuracy = two_rounds
    assert accuracy[1] > 0.3 and accuracy[2] > 0.3, accuracy
    assert accuracy[2] > 0.6, accuracy


def test_widths_within_bounds_and_global_shapes(two_rounds) -> None:
    """max_j L_j <= L' <= min(sum_j L_j, cap) per layer; arrays have the recorded widths."""
    strategy, _, result, _ = two_rounds
    assert strategy.width_history[1] != [16, 12], "gamma0=7 should open new units"
    for widths in strategy.width_history.values():
        for width, own in zip(widths, (16, 12), strict=True):
            assert own <= width <= min(4 * own, 2 * own)
    shapes = state_shapes(result.arrays)
    last = strategy.width_history[2]
    assert shapes["net.1.weight"] == (last[0], 10)
    assert shapes["net.3.weight"] == (last[1], last[0])
    assert shapes["net.5.weight"] == (10, last[1])
    growth = sum(int(np.prod(s)) for s in shapes.values()) / PARAMS
    assert strategy.growth_history[2] == pytest.approx(growth)
    assert all(len(t) == 2 and min(t) >= 0 for t in strategy.matching_time.values())


def test_reconstruction_has_original_size(two_rounds) -> None:
    """Round 2 starts from each client's model reconstructed to the original size (§6)."""
    _, grid, _, _ = two_rounds
    template = state_shapes(mlp().state_dict())
    assert all("arrays" not in m.content for m in grid.sent[0])  # round 1: own init
    for msg in grid.sent[3]:
        assert state_shapes(msg.content["arrays"]) == template


def _payload(exchanges) -> int:
    """float32/int64 payload of the ArrayRecords in some exchanges (no npy headers)."""
    return sum(
        arr.numpy().nbytes
        for exchange in exchanges
        for msg in exchange
        if msg.has_content()
        for record in msg.content.array_records.values()
        for arr in record.values()
    )


def _counted(exchanges) -> int:
    return sum(
        record.count_bytes()
        for exchange in exchanges
        for msg in exchange
        if msg.has_content()
        for record in msg.content.array_records.values()
    )


def test_byte_meter_matches_the_section_7_formula(two_rounds) -> None:
    """Payload = reconstructed models + layer uploads + global layers + assignments (§7)."""
    strategy, grid, _, _ = two_rounds
    for fedma_round in (1, 2):
        h1, h2 = strategy.width_history[fedma_round]
        # Uploads: layer n with its input side aligned to the global width of layer n-1.
        up = (16 * 10 + 16) + (12 * h1 + 12) + (10 * h2 + 10)
        # Downloads: global layers 0 and 1, and round 2 starts with the reconstructed model.
        down = (h1 * 10 + h1) + (h2 * h1 + h2) + (PARAMS if fedma_round == 2 else 0)
        assignments = (16 + 12) * 8  # int64 per client unit
        steps = slice(3 * (fedma_round - 1), 3 * fedma_round)
        assert _payload(grid.sent[steps]) == 4 * (4 * down + assignments)
        assert _payload(grid.received[steps]) == 4 * 4 * up
        # The strategy's meter counts what the runner's MeteredGrid counts.
        assert strategy.bytes_history[fedma_round] == {
            "sent": _counted(grid.sent[steps]),
            "received": _counted(grid.received[steps]),
        }
    assert all(ASSIGNMENT_KEY in m.content["arrays"] for m in grid.sent[1])


def test_runs_are_deterministic(two_rounds, task_identity: None) -> None:
    """Same seeds, another run: bitwise equal global model and widths (§12.5, §13)."""
    strategy, _, result, _ = two_rounds
    again, _, result2, _ = _run(2, gamma0=7.0)
    assert again.width_history == strategy.width_history
    for key in result.arrays:
        np.testing.assert_array_equal(result.arrays[key].numpy(), result2.arrays[key].numpy())


def test_dropped_client_leaves_the_pass(task_identity: None) -> None:
    """A client failing at step 2 is dropped; the pass finishes with the other three."""
    _, grid, result, accuracy = _run(1, fail={101: 2})
    assert [len(ex) for ex in grid.sent] == [4, 4, 3]
    assert 1 in result.train_metrics_clientapp
    assert accuracy[1] > 0.3


def _truncate_first_array(reply) -> None:
    arrays = reply.content["arrays"]
    key = next(iter(arrays.keys()))
    old = arrays[key]
    arrays[key] = Array(old.dtype, old.shape, old.stype, old.data[:-4])


def _nan_first_array(reply) -> None:
    arrays = reply.content["arrays"]
    key = next(iter(arrays.keys()))
    arrays[key] = Array(np.full(arrays[key].shape, np.nan, np.dtype(arrays[key].dtype)))


def _absurd_width(reply) -> None:
    arrays = reply.content["arrays"]
    key = next(iter(arrays.keys()))
    shape = (100_000, *arrays[key].shape[1:])
    arrays[key] = Array(np.zeros(shape, np.dtype(arrays[key].dtype)))


@pytest.mark.parametrize("rewrite", [_truncate_first_array, _nan_first_array, _absurd_width])
def test_malformed_upload_leaves_the_pass_instead_of_crashing_it(
    task_identity: None, rewrite
) -> None:
    """Measured: FedMA parsed uploads with ``np.load``, so one crafted array ended the run. A
    truncated body, NaN values or an absurd width at step 2 drop that node; the others finish."""
    _, grid, _, accuracy = _run(1, tamper={101: (2, rewrite)})
    assert [len(ex) for ex in grid.sent] == [4, 4, 3]
    assert accuracy[1] > 0.3


def test_too_few_clients_abandons_the_pass(task_identity: None) -> None:
    """Fewer replies than min_train_nodes: the pass stops and the global model is kept."""
    initial = _initial()
    strategy, grid, result, _ = _run(1, fail={100: 1, 101: 1, 102: 1}, min_train_nodes=2)
    assert len(grid.sent) == 1
    assert strategy.width_history == {}
    for key in initial:
        np.testing.assert_array_equal(result.arrays[key].numpy(), initial[key].numpy())


def test_federated_evaluation_of_the_grown_model(task_identity: None) -> None:
    """configure_evaluate sends evaluate.fedma with the global arrays; metrics aggregate."""
    grid, _, _ = federation(4)
    strategy = FedMA(model_fn=mlp, fraction_evaluate=0.5, gamma0=1e-3)
    result = strategy.start(grid, _initial(), num_rounds=1)
    evaluate_exchange = grid.sent[-1]
    assert {m.metadata.message_type for m in evaluate_exchange} == {FEDMA_EVALUATE}
    assert len(evaluate_exchange) == 2
    assert 0.0 <= result.evaluate_metrics_clientapp[1]["eval-acc"] <= 1.0


def test_bad_configuration_is_a_clear_value_error() -> None:
    """BatchNorm models, bad fractions and inconsistent minimums fail in the constructor."""
    with pytest.raises(ValueError, match="BatchNorm"):
        FedMA(model_fn=lambda: ResNet18(num_classes=10))
    with pytest.raises(ValueError, match="at least two matchable layers"):
        FedMA(model_fn=lambda: nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="fraction_train"):
        FedMA(model_fn=mlp, fraction_train=0.0)
    with pytest.raises(ValueError, match="min_available_nodes"):
        FedMA(model_fn=mlp, min_train_nodes=4, min_available_nodes=2)
    with pytest.raises(ValueError, match="max_width_ratio"):
        FedMA(model_fn=mlp, max_width_ratio=0.5)
    with pytest.raises(ValueError, match="initial_arrays"):
        FedMA(model_fn=mlp).start(None, ArrayRecord(DigitsCNN().state_dict()))  # type: ignore[arg-type]


def test_registered_and_model_for_arrays_builds_grown_models() -> None:
    """The registry knows "fedma"; model_for_arrays fits any grown widths."""
    strategy = STRATEGIES.create("fedma", model_fn=DigitsCNN)
    assert isinstance(strategy, FedMA)
    grown = DigitsCNN(width=20)
    model = strategy.model_for_arrays(ArrayRecord(grown.state_dict()))
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(model(x), grown(x))


def test_partial_participation_gives_newcomers_a_client_size_model(task_identity: None) -> None:
    """fraction_train=0.5: a client new to round 2 starts from the most popular units."""
    import random

    random.seed(3)
    strategy, grid, result, accuracy = _run(3, gamma0=7.0, fraction_train=0.5)
    template = state_shapes(mlp().state_dict())
    rounds = [{m.metadata.dst_node_id for m in grid.sent[3 * r]} for r in range(3)]
    assert all(len(nodes) == 2 for nodes in rounds)
    assert any(b - a for a, b in itertools.pairwise(rounds)), "no newcomer sampled"
    for r in (1, 2):
        for msg in grid.sent[3 * r]:
            assert state_shapes(msg.content["arrays"]) == template
    assert sorted(result.train_metrics_clientapp) == [1, 2, 3]
    assert accuracy[3] > 0.3, accuracy
    assert sorted(strategy.width_history) == [1, 2, 3]


def test_should_stop_ends_the_run_early_as_in_flower_1_43(task_identity: None) -> None:
    """Flower 1.43's ``Strategy.start`` takes ``should_stop(round, result)``; FedMA honours it
    after each FedMA round (SecAggPlus shares the same loop)."""
    grid, _, _ = federation(4)
    strategy = FedMA(model_fn=mlp, fraction_evaluate=0.0, gamma0=1e-3)
    seen: list[int] = []

    def stop_after_one(server_round: int, result) -> bool:
        seen.append(server_round)
        return True

    strategy.start(grid, _initial(), num_rounds=3, should_stop=stop_after_one)
    assert seen == [1]
    assert len(grid.sent) == strategy.num_steps  # one FedMA round only
