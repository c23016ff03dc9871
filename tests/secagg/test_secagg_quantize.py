"""Quantization: error bounds, unbiasedness, clipping counts, weights (spec sections 5, 12.1)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from flower_suite.secagg import SecAggParams, dequantize_mean, encode_input, quantize
from flower_suite.secagg.quantize import client_weight


def _params(**overrides: object) -> SecAggParams:
    base: dict[str, object] = dict(
        n=4, k=4, t=3, m=3, c=2.0, T=2**12, mod_bits=32, W=50, stochastic_rounding=False
    )
    base.update(overrides)
    return SecAggParams(**base)  # type: ignore[arg-type]


def _reference_q(x: np.ndarray, c: float, levels: int) -> np.ndarray:
    """Obvious float64 reference: nearest level of the clipped value."""
    scaled = (np.clip(x, -c, c) + c) / (2 * c) * (levels - 1)
    return np.floor(scaled + 0.5)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(1, 50), elements=st.floats(-5, 5)))
def test_deterministic_quantization_matches_reference_and_is_within_half_a_step(
    x: np.ndarray,
) -> None:
    c, T = 2.0, 2**12
    q, clipped = quantize(x, c, T, None)
    assert q.min() >= 0 and q.max() <= T - 1
    assert np.array_equal(q, _reference_q(x, c, T))
    assert clipped == int(np.sum(np.abs(x) > c))
    step = 2 * c / (T - 1)
    assert np.all(np.abs(q * step - c - np.clip(x, -c, c)) <= step / 2 + 1e-12)


def test_weighted_mean_error_is_at_most_half_a_step() -> None:
    p = _params()
    rng = np.random.default_rng(0)
    xs = rng.normal(0, 1.5, size=(4, 500))  # some entries beyond c = 2 are clipped
    counts = [3, 10, 50, 7]  # up to W = 50 (larger weights are refused, see below)
    total = sum(
        encode_input(x, e, p, None).vector.astype(np.uint64)
        for x, e in zip(xs, counts, strict=True)
    )
    weights = np.array(counts)
    expected = np.average(np.clip(xs, -2, 2), axis=0, weights=weights)
    mean = dequantize_mean(total, p)
    assert int(total[0]) == weights.sum()
    assert np.abs(mean - expected).max() <= p.step / 2 + 1e-12


def test_stochastic_rounding_is_unbiased() -> None:
    # spec 12.1: mean error -> 0 over 10^4 trials; each trial's error is at most one step
    c, T = 1.0, 9  # coarse grid: step 0.25 makes any bias obvious
    x = np.array([0.1, -0.37, 0.99, 0.5, -1.0, 0.0])
    rng = np.random.default_rng(1)
    step = 2 * c / (T - 1)
    trials = np.stack([quantize(x, c, T, rng)[0] * step - c for _ in range(10_000)])
    assert np.all(np.abs(trials - x) <= step + 1e-12)
    stderr = step / 2 / np.sqrt(10_000)
    assert np.all(np.abs(trials.mean(axis=0) - x) < 5 * stderr)
    # nearest rounding of 0.1 on this grid is biased (0.0 or 0.25): the test can fail
    assert abs((quantize(x, c, T, None)[0] * step - c)[0] - 0.1) > 5 * stderr


def test_encode_input_layout_and_clipping_report() -> None:
    p = _params(c=1.0, T=11)
    x = np.array([-3.0, -1.0, 0.0, 0.5, 1.0, 7.0])
    encoded = encode_input(x, 4, p, None)
    assert encoded.vector.dtype == np.uint32
    assert encoded.vector.tolist() == [4, 0, 0, 20, 4 * 8, 40, 40]  # [w, w*q]; 0.5 -> 7.5 -> 8
    assert encoded.clipped == 2
    assert encoded.clipped_fraction == pytest.approx(2 / 6)


def test_weights_are_refused_not_capped_and_validated() -> None:
    # one rule: an integer in [0, W] is used as is; anything else is refused (never capped)
    assert client_weight(12.0, 100) == 12
    assert client_weight(1000, 1000) == 1000
    assert client_weight(0, 1) == 0
    with pytest.raises(ValueError, match="integer"):
        client_weight(12.9, 100)
    with pytest.raises(ValueError, match="exceeds max_weight"):
        client_weight(5000, 1000)
    with pytest.raises(ValueError, match=">= 0"):
        client_weight(-1, 10)
    with pytest.raises(ValueError, match="finite"):
        client_weight(float("nan"), 10)
    with pytest.raises(ValueError, match="NaN"):
        quantize(np.array([np.nan]), 1.0, 4, None)
    with pytest.raises(ValueError, match="zero"):
        dequantize_mean(np.zeros(3, dtype=np.uint32), _params())
