"""Hypothesis properties: permutation invariance, translation equivariance, output ranges."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flower_suite.aggregation import (
    AggregationResult,
    bulyan,
    coordinate_median,
    geometric_median,
    krum,
    multi_krum,
    sign_majority,
    trimmed_mean,
    weighted_mean,
)

Rule = Callable[[torch.Tensor], AggregationResult]

# (name, rule, n range, tolerance relative to the input scale). Krum with a single neighbour
# ties structurally (mutual nearest neighbours have equal scores), so the Krum family is drawn
# with at least 2 neighbours in every Krum round: n >= 4 for Krum / Multi-Krum / one-shot Bulyan,
# f >= 3 for iterative Bulyan, whose pool shrinks to 2f + 1 (f - 1 neighbours).
RULES: list[tuple[str, Rule, tuple[int, int], float]] = [
    ("mean", lambda x: weighted_mean(x), (1, 12), 1e-12),
    ("median", lambda x: coordinate_median(x), (1, 12), 1e-12),
    ("trimmed_mean", lambda x: trimmed_mean(x, beta=0.2), (1, 12), 1e-12),
    ("krum", lambda x: krum(x, num_malicious_nodes=(x.shape[0] - 3) // 2), (4, 12), 1e-12),
    (
        "multi_krum",
        lambda x: multi_krum(x, num_malicious_nodes=(x.shape[0] - 3) // 2),
        (4, 12),
        1e-12,
    ),
    ("bulyan", lambda x: bulyan(x, num_malicious_nodes=(x.shape[0] - 3) // 4), (15, 20), 1e-12),
    (
        "bulyan_one_shot",
        lambda x: bulyan(x, num_malicious_nodes=(x.shape[0] - 3) // 4, variant="one_shot"),
        (4, 12),
        1e-12,
    ),
    (
        "geometric_median",
        lambda x: geometric_median(x, nu=1e-9, max_iter=3000, tol=1e-11),
        (1, 12),
        1e-5,
    ),
]
PROPERTY = settings(max_examples=30, deadline=None)


@st.composite
def generic_inputs(
    draw: Any, n_range: tuple[int, int] = (1, 12)
) -> tuple[np.ndarray, np.random.Generator]:
    """Continuous random inputs (no ties), an occasional outlying row, and an rng for the test."""
    n = draw(st.integers(min_value=n_range[0], max_value=n_range[1]))
    d = draw(st.integers(min_value=1, max_value=6))
    rng = np.random.default_rng(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    x = rng.normal(size=(n, d)) * scale
    if n > 3 and draw(st.booleans()):
        x[rng.integers(n)] += 50 * scale
    return x, rng


def _close(a: torch.Tensor, b: torch.Tensor, tol: float, scale: float) -> None:
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=tol * scale)


@pytest.mark.parametrize(("name", "rule", "n_range", "tol"), RULES, ids=[r[0] for r in RULES])
@PROPERTY
@given(data=st.data())
def test_permutation_invariance(
    name: str, rule: Rule, n_range: tuple[int, int], tol: float, data: st.DataObject
) -> None:
    x, rng = data.draw(generic_inputs(n_range))
    perm = rng.permutation(len(x))
    scale = float(np.abs(x).max())
    original = rule(torch.from_numpy(x))
    permuted = rule(torch.from_numpy(x[perm]))
    _close(permuted.aggregate, original.aggregate, tol, scale)
    if original.selected:
        assert sorted(int(perm[i]) for i in permuted.selected) == sorted(original.selected)


@pytest.mark.parametrize(("name", "rule", "n_range", "tol"), RULES, ids=[r[0] for r in RULES])
@PROPERTY
@given(data=st.data())
def test_translation_equivariance(
    name: str, rule: Rule, n_range: tuple[int, int], tol: float, data: st.DataObject
) -> None:
    x, rng = data.draw(generic_inputs(n_range))
    shift = rng.normal(size=x.shape[1]) * data.draw(st.sampled_from([1.0, 100.0]))
    scale = float(np.abs(x).max() + np.abs(shift).max())
    moved = rule(torch.from_numpy(x + shift)).aggregate
    _close(moved, rule(torch.from_numpy(x)).aggregate + torch.from_numpy(shift), tol, scale)


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.25, 0.45])
@PROPERTY
@given(data=st.data())
def test_median_and_trimmed_mean_stay_in_the_coordinate_range(
    beta: float, data: st.DataObject
) -> None:
    x, _ = data.draw(generic_inputs())
    lo, hi = torch.from_numpy(x.min(axis=0)), torch.from_numpy(x.max(axis=0))
    for out in (
        coordinate_median(torch.from_numpy(x)),
        trimmed_mean(torch.from_numpy(x), beta=beta),
    ):
        assert (out.aggregate >= lo).all() and (out.aggregate <= hi).all()


@PROPERTY
@given(data=st.data(), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_sign_majority_outputs_only_minus_one_zero_one(
    data: st.DataObject, dtype: torch.dtype
) -> None:
    x, rng = data.draw(generic_inputs())
    x[rng.random(x.shape) < 0.3] = 0.0
    out = sign_majority(torch.from_numpy(x).to(dtype)).aggregate
    assert out.dtype == dtype
    assert set(out.tolist()) <= {-1.0, 0.0, 1.0}
    assert torch.equal(out, torch.sign(torch.sign(torch.from_numpy(x)).sum(dim=0)).to(dtype))
