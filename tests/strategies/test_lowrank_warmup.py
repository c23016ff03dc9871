"""LowRankWarmup: full-rank rounds, the one-time SVD switch, tagged configs afterwards."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp.strategy import FedAvg
from strategy_fixtures import fake_grid, reply

from flower_suite.clients.client_app import load_arrays
from flower_suite.models import DigitsCNN
from flower_suite.models.lowrank_spec import RATIO_KEY, LowRankSpec
from flower_suite.strategies import Krum
from flower_suite.strategies.lowrank import LowRankWarmup

SPEC = LowRankSpec(0.25)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return DigitsCNN()


def _wrapper(warmup: int = 2, lr_factor: float = 0.5, inner=None) -> LowRankWarmup:
    inner = inner or FedAvg(min_available_nodes=2, min_train_nodes=2, min_evaluate_nodes=2)
    return LowRankWarmup(inner, SPEC, _model, warmup_rounds=warmup, lr_factor=lr_factor)


def _send(strategy, rnd: int, arrays: ArrayRecord, nodes: int = 2) -> list:
    config = ConfigRecord({"lr": 0.1, "seed": 0})
    grid = fake_grid(list(range(1, nodes + 1)))
    return list(strategy.configure_train(rnd, arrays, config, grid))


def test_warmup_rounds_send_the_full_model_untagged(task_identity: None) -> None:
    strategy = _wrapper(warmup=2)
    full = ArrayRecord(_model().state_dict())
    for rnd in (1, 2):
        messages = _send(strategy, rnd, full)
        assert list(messages[0].content["arrays"].keys()) == list(full.keys())
        assert RATIO_KEY not in messages[0].content["config"]
        assert messages[0].content["config"]["lr"] == 0.1
    assert strategy.switch_round is None


def test_switch_sends_truncated_svd_factors_and_tags(task_identity: None) -> None:
    strategy = _wrapper(warmup=2)
    model = _model()
    messages = _send(strategy, 3, ArrayRecord(model.state_dict()))
    assert strategy.switch_round == 3
    config = messages[0].content["config"]
    assert LowRankSpec.from_config(config) == SPEC
    assert config["lr"] == pytest.approx(0.05)
    arrays = messages[0].content["arrays"]
    assert strategy.is_lowrank(arrays)
    # fc 512 -> 64 at rank 16: the factors' product is the best rank-16 approximation.
    w = model.classifier[1].weight.detach().double()
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    best = (u[:, :16] * s[:16]) @ vh[:16]
    v_w = torch.as_tensor(arrays["classifier.1.v.weight"].numpy()).double()
    u_w = torch.as_tensor(arrays["classifier.1.u.weight"].numpy()).double()
    assert torch.allclose(v_w @ u_w, best, atol=1e-5)
    # Kept layers are copied bitwise.
    np.testing.assert_array_equal(
        arrays["features.0.weight"].numpy(), model.features[0].weight.detach().numpy()
    )


def test_after_switch_factors_pass_through_and_evaluate_is_tagged(task_identity: None) -> None:
    strategy = _wrapper(warmup=1)
    low = ArrayRecord(SPEC.apply(_model()).state_dict())
    messages = _send(strategy, 2, low)
    sent = messages[0].content["arrays"]
    for key in low:
        np.testing.assert_array_equal(sent[key].numpy(), low[key].numpy())
    evaluate = list(strategy.configure_evaluate(2, low, ConfigRecord({}), fake_grid([1, 2])))
    assert LowRankSpec.from_config(evaluate[0].content["config"]) == SPEC
    assert "lr" not in evaluate[0].content["config"]


def test_switch_round_without_aggregate_still_factorizes_next_round(task_identity: None) -> None:
    strategy = _wrapper(warmup=1)
    full = ArrayRecord(_model().state_dict())
    _send(strategy, 2, full)
    # Round 2 produced no aggregate: Flower hands the full-rank model again.
    messages = _send(strategy, 3, full)
    assert strategy.is_lowrank(messages[0].content["arrays"])
    assert strategy.switch_round == 2


def test_model_for_arrays_builds_either_architecture() -> None:
    strategy = _wrapper()
    model = _model()
    full = ArrayRecord(model.state_dict())
    low = ArrayRecord(SPEC.apply(model).state_dict())
    x = torch.randn(3, 1, 8, 8)
    rebuilt_full, rebuilt_low = strategy.model_for_arrays(full), strategy.model_for_arrays(low)
    assert torch.equal(rebuilt_full(x), model(x))
    expected = SPEC.apply(model)
    assert torch.allclose(rebuilt_low(x), expected(x))


def test_aggregation_and_records_come_from_the_wrapped_strategy(task_identity: None) -> None:
    strategy = _wrapper(warmup=0, inner=Krum(min_train_nodes=3, min_available_nodes=3))
    messages = _send(strategy, 1, ArrayRecord(_model().state_dict()), nodes=5)
    low = messages[0].content["arrays"]
    replies = [
        reply({k: v.numpy() + 0.01 * i for k, v in low.items()}, node_id=10 + i) for i in range(5)
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None and strategy.is_lowrank(arrays)
    assert strategy.records[1].selected  # attribute read falls through to Krum
    model = strategy.model_for_arrays(arrays)
    load_arrays(model, arrays)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"warmup_rounds": -1}, "warmup_rounds"), ({"lr_factor": 0}, "lr_factor")],
)
def test_bad_parameters(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LowRankWarmup(FedAvg(), SPEC, _model, **kwargs)
