"""Pairwise squared distances: exactness, the float32 Gram-matrix trap, chunking, symmetry."""

from __future__ import annotations

import numpy as np
import pytest
import reference_rules as ref
import torch

from flower_suite.aggregation import pairwise_sq_distances


def _close_models(dtype: torch.dtype) -> torch.Tensor:
    # Models sharing a large common vector and differing by 1e-3 noise (Flower's Krum setting).
    g = torch.Generator().manual_seed(0)
    common = 10.0 * torch.randn(100_000, generator=g, dtype=torch.float64)
    noise = 1e-3 * torch.randn(6, 100_000, generator=g, dtype=torch.float64)
    return (common + noise).to(dtype)


def _relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    off = ~np.eye(len(expected), dtype=bool)
    return float(np.max(np.abs(actual[off] - expected[off]) / expected[off]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_a_float64_difference_loop(dtype: torch.dtype) -> None:
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(9, 300)) * 3 + 1).to(dtype)
    exact = ref.ref_sq_distances(x.to(torch.float64).numpy())
    assert _relative_error(pairwise_sq_distances(x).numpy(), exact) < 1e-9


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_close_models_are_exact_where_a_float32_gram_matrix_fails(dtype: torch.dtype) -> None:
    # prepare
    x = _close_models(dtype)
    x64 = x.to(torch.float64)
    exact = ((x64[:, None, :] - x64[None, :, :]) ** 2).sum(dim=-1).numpy()  # direct differences
    # execute
    ours = pairwise_sq_distances(x).numpy()
    x32 = x.float()
    sq = (x32 * x32).sum(dim=1)
    gram = (sq[:, None] + sq[None, :] - 2.0 * (x32 @ x32.T)).numpy()  # Flower-style, float32
    # assert
    assert _relative_error(ours, exact) < 1e-9
    # The trap, documented: the float32 shortcut is off by far more than the distances
    # themselves, and its self-distances (which should be 0) are as large as the signal. Which
    # sign the error takes depends on the summation order (Flower sees negative values).
    assert _relative_error(gram, exact) > 1.0
    assert np.abs(np.diag(gram)).max() > exact[~np.eye(6, dtype=bool)].max()


def test_chunked_equals_unchunked_and_is_symmetric_with_zero_diagonal() -> None:
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(7, 1000)) + 50.0)
    whole = pairwise_sq_distances(x, chunk_size=10**6)
    chunked = pairwise_sq_distances(x, chunk_size=37)
    assert torch.allclose(chunked, whole, rtol=1e-12, atol=0)
    for d in (whole, chunked):
        assert torch.equal(d, d.T)
        assert torch.equal(torch.diagonal(d), torch.zeros(7, dtype=torch.float64))
        assert d.dtype == torch.float64 and (d >= 0).all()


def test_duplicates_have_distance_exactly_zero() -> None:
    x = torch.tensor([[1.5, -2.0, 3.0], [1.5, -2.0, 3.0], [0.0, 0.0, 0.0]])
    d = pairwise_sq_distances(x)
    assert d[0, 1] == 0.0 and d[1, 0] == 0.0
    assert float(d[0, 2]) == pytest.approx(1.5**2 + 4 + 9, rel=1e-15)
