"""Coordinate-wise median and trimmed mean: spec section 5 check 4 and the even-n trap."""

from __future__ import annotations

import numpy as np
import pytest
import reference_rules as ref
import torch
from scipy import stats

from flower_suite.aggregation import coordinate_median, trimmed_mean
from flower_suite.aggregation.coordinate import weighted_column_median_f64

FIVE = torch.tensor([[1.0], [2.0], [3.0], [4.0], [100.0]])


def test_spec_check_4_median_and_trimmed_mean() -> None:
    assert coordinate_median(FIVE).aggregate.tolist() == [3.0]
    assert trimmed_mean(FIVE, beta=0.2).aggregate.tolist() == [3.0]
    with pytest.raises(ValueError, match=r"trimmed_mean requires 0 <= beta < 0\.5") as err:
        trimmed_mean(FIVE, beta=0.5)
    assert "beta=0.5" in str(err.value) and "n=5" in str(err.value)


def test_even_n_median_averages_the_two_middle_values() -> None:
    # prepare
    x = torch.tensor([[1.0, -4.0], [2.0, 0.0], [3.0, 7.0], [10.0, 1.0]])
    # execute
    ours = coordinate_median(x).aggregate
    # assert: the trap is torch.median, which returns the lower middle value.
    assert ours.tolist() == [2.5, 0.5]
    assert torch.median(x, dim=0).values.tolist() == [2.0, 0.0]
    assert ours.tolist() == np.median(x.numpy(), axis=0).tolist()


@pytest.mark.parametrize("n", [2, 3, 49, 50])
def test_median_and_trimmed_mean_agree_with_numpy_and_scipy_across_chunks(n: int) -> None:
    # prepare: d large enough for several column blocks; integer values give many ties.
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 60_000)).astype(np.float32)
    x[:, ::3] = np.round(x[:, ::3])
    t = torch.from_numpy(x)
    exact = x.astype(np.float64)
    # execute
    median = coordinate_median(t).aggregate
    trimmed = trimmed_mean(t, beta=0.2).aggregate
    # assert
    np.testing.assert_allclose(median.numpy(), np.median(exact, axis=0), rtol=0, atol=1e-6)
    expected = stats.trim_mean(exact, 0.2, axis=0)
    np.testing.assert_allclose(trimmed.numpy(), expected, rtol=0, atol=1e-6)


def test_median_above_2_pow_24_elements() -> None:
    # torch.quantile refuses inputs this large; the median kernel must not depend on it.
    v = torch.arange(2**23, dtype=torch.float32) % 1000
    x = torch.stack([v + 7.0, v - 1.0, v + 0.5])
    out = coordinate_median(x).aggregate
    assert x.numel() > 2**24
    assert torch.equal(out, v + 0.5)


def test_trimmed_mean_with_beta_zero_is_the_mean_and_n_one_median_is_identity() -> None:
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(6, 9)))
    assert torch.allclose(trimmed_mean(x, beta=0.0).aggregate, x.mean(dim=0), atol=1e-15)
    assert torch.equal(coordinate_median(x[:1]).aggregate, x[0])


def test_weights_are_ignored_by_median_and_trimmed_mean() -> None:
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(7, 5)))
    w = torch.arange(1.0, 8.0, dtype=torch.float64)
    assert torch.equal(coordinate_median(x, w).aggregate, coordinate_median(x).aggregate)
    assert torch.equal(trimmed_mean(x, w, beta=0.2).aggregate, trimmed_mean(x, beta=0.2).aggregate)


def test_trimmed_mean_is_not_fooled_by_huge_outliers() -> None:
    # A sum-minus-extremes shortcut would cancel catastrophically here.
    x = torch.tensor([[1.0], [2.0], [3.0], [1e30], [-1e30]], dtype=torch.float64)
    assert trimmed_mean(x, beta=0.2).aggregate.tolist() == [2.0]


@pytest.mark.parametrize("beta", [-0.1, 0.5, 0.7, float("nan"), float("inf")])
def test_invalid_beta_raises(beta: float) -> None:
    with pytest.raises(ValueError, match="trimmed_mean requires"):
        trimmed_mean(FIVE, beta=beta)


def test_float16_input_keeps_dtype() -> None:
    x = torch.tensor([[1.0], [2.0], [3.0], [8.0]], dtype=torch.float16)
    assert coordinate_median(x).aggregate.dtype == torch.float16
    assert coordinate_median(x).aggregate.tolist() == [2.5]
    assert trimmed_mean(x, beta=0.25).aggregate.tolist() == [2.5]


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_weighted_column_median_matches_the_reference(n: int) -> None:
    # prepare: integer example counts (exact cumulative sums), some ties at exactly half, a
    # zero weight, and counts whose sum overflows float64
    rng = np.random.default_rng(n)
    x = torch.from_numpy(rng.normal(size=(n, 9)))
    for weights in [
        rng.integers(0, 5, size=n).astype(np.float64) + (np.arange(n) == 0),
        np.ones(n),
        np.full(n, 1e308),
    ]:
        # execute
        ours = weighted_column_median_f64(x, torch.from_numpy(weights))
        # assert
        expected = ref.ref_weighted_coordinate_median(x.numpy(), weights / weights.max())
        np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(
        weighted_column_median_f64(x, torch.ones(n)).numpy(), np.median(x.numpy(), axis=0)
    )
