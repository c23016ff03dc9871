"""Input validation of every rule (ValueError naming the rule) and the AGGREGATORS registry."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch

from flower_suite.aggregation import AGGREGATORS, AggregationResult
from flower_suite.registry import RegistryError

# Valid configuration for n = 7 inputs, per registered name.
CONFIGS: dict[str, dict[str, Any]] = {
    "mean": {},
    "krum": {"num_malicious_nodes": 1},
    "multi_krum": {"num_malicious_nodes": 1},
    "median": {},
    "trimmed_mean": {"beta": 0.1},
    "bulyan": {"num_malicious_nodes": 1},
    "geometric_median": {},
    "sign_majority": {},
    "centered_clipping": {"tau": 1.0},
}
NAMES = sorted(CONFIGS)


def _valid(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(7, 4, generator=torch.Generator().manual_seed(0)).to(dtype)


def _bad_updates() -> dict[str, torch.Tensor]:
    nan, inf = _valid(), _valid()
    nan[2, 1] = float("nan")
    inf[5, 0] = -float("inf")
    return {
        "nan-row": nan,
        "inf-row": inf,
        "1-D": torch.ones(7),
        "3-D": torch.ones(7, 2, 2),
        "integer": torch.ones(7, 4, dtype=torch.int64),
        "empty": torch.ones(0, 4),
        "zero-width": torch.ones(7, 0),
    }


def _bad_weights() -> dict[str, torch.Tensor]:
    return {
        "negative": torch.tensor([1.0, 1.0, -1.0, 1.0, 1.0, 1.0, 1.0]),
        "zero-sum": torch.zeros(7),
        "wrong-length": torch.ones(6),
        "2-D": torch.ones(7, 1),
        "nan": torch.tensor([1.0, float("nan"), 1.0, 1.0, 1.0, 1.0, 1.0]),
    }


def _names_rule(name: str) -> str:
    return "(?i)" + re.escape(name)


def test_registry_holds_every_rule_under_one_name() -> None:
    assert set(NAMES) <= set(AGGREGATORS)
    assert "multi-krum" in AGGREGATORS  # the registry normalises - and _


@pytest.mark.parametrize("name", NAMES)
def test_registered_rule_runs_and_keeps_dtype(name: str) -> None:
    for dtype in (torch.float32, torch.float64):
        x = _valid(dtype)
        before = x.clone()
        result = AGGREGATORS.get(name)(x, **CONFIGS[name])
        assert isinstance(result, AggregationResult)
        assert result.aggregate.dtype == dtype and result.aggregate.shape == (4,)
        assert torch.equal(x, before)
    AGGREGATORS.check_kwargs(name, CONFIGS[name], field="aggregation")
    with pytest.raises(RegistryError, match="no parameter"):
        AGGREGATORS.check_kwargs(name, {"not_a_parameter": 1}, field="aggregation")


@pytest.mark.parametrize("case", sorted(_bad_updates()))
@pytest.mark.parametrize("name", NAMES)
def test_bad_updates_raise_naming_the_rule(name: str, case: str) -> None:
    with pytest.raises(ValueError, match=_names_rule(name)):
        AGGREGATORS.get(name)(_bad_updates()[case], **CONFIGS[name])


@pytest.mark.parametrize("case", sorted(_bad_weights()))
@pytest.mark.parametrize("name", NAMES)
def test_bad_weights_raise_naming_the_rule(name: str, case: str) -> None:
    with pytest.raises(ValueError, match=_names_rule(name)):
        AGGREGATORS.get(name)(_valid(), _bad_weights()[case], **CONFIGS[name])


def test_nan_message_lists_the_bad_rows() -> None:
    with pytest.raises(ValueError, match=r"median: updates \[2\] contain NaN or Inf"):
        AGGREGATORS.get("median")(_bad_updates()["nan-row"])


@pytest.mark.parametrize(
    ("name", "f", "message"),
    [
        ("krum", 3, r"krum requires n >= 2f\+3 \(got n=7, f=3\)"),
        ("multi_krum", 3, r"multi_krum requires n >= 2f\+3 \(got n=7, f=3\)"),
        ("multi_krum", 9, r"multi_krum requires n >= 2f\+3 \(got n=7, f=9\)"),
        ("bulyan", 2, r"Bulyan requires n >= 4f\+3 \(got n=7, f=2\)"),
        ("krum", -1, r"krum: num_malicious_nodes must be >= 0"),
        ("bulyan", -1, r"Bulyan: num_malicious_nodes must be >= 0"),
    ],
)
def test_too_many_malicious_nodes_raise(name: str, f: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AGGREGATORS.get(name)(_valid(), num_malicious_nodes=f)


WEIGHTED = ["mean", "multi_krum", "geometric_median", "centered_clipping"]


@pytest.mark.parametrize("name", WEIGHTED)
def test_weights_summing_past_float64_max_act_as_equal_weights(name: str) -> None:
    # Measured: three claims of 1e308 examples summed to inf and normalized to all zeros, so
    # the weighted mean returned a zero update without a word.
    # prepare
    updates = _valid(torch.float64)
    huge = torch.full((7,), 1e308, dtype=torch.float64)
    # execute
    rule = AGGREGATORS.get(name)
    claimed = rule(updates, huge, **CONFIGS[name]).aggregate
    equal = rule(updates, torch.ones(7, dtype=torch.float64), **CONFIGS[name]).aggregate
    # assert
    torch.testing.assert_close(claimed, equal, rtol=1e-12, atol=1e-12)
    assert bool(claimed.abs().max() > 0)
