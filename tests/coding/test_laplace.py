"""The Laplace mechanism option (spec approxifer.md §7, §11.7): ℓ1 sensitivity, noise scale,
composition and clipping."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from flower_suite.coding.berrut import decoding_matrix
from flower_suite.coding.laplace import (
    PROBABILITY_L1_SENSITIVITY,
    LaplaceMechanism,
    clip_l1,
    decoded_l1_sensitivity,
)


def test_scale_is_l1_sensitivity_over_epsilon() -> None:
    mechanism = LaplaceMechanism(epsilon=0.5, l1_sensitivity=2.0)
    assert mechanism.scale == 4.0
    assert mechanism.std == pytest.approx(math.sqrt(2.0) * 4.0)
    assert mechanism.composed_epsilon(9) == pytest.approx(4.5)  # |F|·ε for a full release


def test_empirical_noise_has_the_laplace_scale() -> None:
    # Prepare
    mechanism = LaplaceMechanism(epsilon=0.8, l1_sensitivity=PROBABILITY_L1_SENSITIVITY)
    values = np.zeros((20_000, 10))
    # Execute
    noise = mechanism.apply(values, np.random.default_rng(0)).ravel()
    # Assert: Laplace(0, Δ1/ε) by a KS test, and the std within 2 % of √2·Δ1/ε
    assert stats.kstest(noise, "laplace", args=(0.0, 2.5)).pvalue > 0.01
    assert abs(noise.std() / (math.sqrt(2.0) * 2.5) - 1.0) < 0.02
    # The ℓ2-style scale (Δ2 = √2 for probabilities) would be rejected by the same test.
    assert stats.kstest(noise, "laplace", args=(0.0, math.sqrt(2.0) / 0.8)).pvalue < 0.01


def test_probability_vectors_differ_by_at_most_2_in_l1() -> None:
    rng = np.random.default_rng(1)
    p, q = rng.dirichlet(np.ones(10), size=1000), rng.dirichlet(np.ones(10) * 0.05, size=1000)
    assert np.abs(p - q).sum(axis=1).max() <= PROBABILITY_L1_SENSITIVITY


def test_clip_l1_bounds_the_sensitivity() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=5.0, size=(500, 10))
    clipped = clip_l1(logits, 3.0)
    norms = np.abs(clipped).sum(axis=1)
    assert norms.max() <= 3.0 + 1e-12
    small = logits / np.abs(logits).sum(axis=1, keepdims=True)  # norm 1: unchanged
    assert np.allclose(clip_l1(small, 3.0), small)
    assert np.abs(clipped[:-1] - clipped[1:]).sum(axis=1).max() <= 6.0 + 1e-12


def test_decoded_sensitivity_sums_the_absolute_decoding_weights() -> None:
    b = decoding_matrix(8, 9, range(8))
    assert decoded_l1_sensitivity(b, 2.0) == pytest.approx(2.0 * np.abs(b).sum())
    assert decoded_l1_sensitivity(b, 2.0) >= 2.0 * 8  # rows sum to 1: at least K·Δ1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"epsilon": 0.0}, "dp_epsilon"),
        ({"epsilon": math.inf}, "dp_epsilon"),
        ({"epsilon": 1.0, "l1_sensitivity": -1.0}, "dp_l1_sensitivity"),
        ({"epsilon": 1.0, "where": "client"}, "dp_where"),
    ],
)
def test_bad_settings_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        LaplaceMechanism(**kwargs)  # type: ignore[arg-type]


def test_refuses_non_finite_values() -> None:
    with pytest.raises(ValueError, match="NaN"):
        LaplaceMechanism(1.0).apply(np.array([np.nan]), np.random.default_rng(0))
    with pytest.raises(ValueError, match="radius"):
        clip_l1(np.zeros((2, 2)), 0.0)
