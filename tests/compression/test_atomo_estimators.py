"""The estimators by Monte Carlo (spec §5 checks 4-6, 8-10): unbiased, the predicted second
moment, E[K] = s, spectral exactness, Theorem 3.8 and Lemma 3.9.

Every draw is seeded, so each test is deterministic; the tolerances are what the CLT allows
(a few standard errors), so they would also hold for almost every other seed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flower_suite.compression import (
    atomic_second_moment,
    atomic_variance,
    atomo_probabilities,
    decode,
    encode,
    sample_entrywise,
    sample_spectral,
    sparsified_weights,
    sparsify_decomposition,
    spectral_decomposition,
    spectral_matrix_shape,
    uniform_probabilities,
)

N_DRAWS = 20_000


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batched_estimates(weights: torch.Tensor, probs: torch.Tensor, draws: int, seed: int):
    """``draws`` independent coefficient vectors ``λ t / p`` from one call (one generator)."""
    lam = weights.expand(draws, -1)
    return sparsified_weights(lam, probs.expand(draws, -1), gen(seed))


def assert_unbiased(estimates: torch.Tensor, truth: torch.Tensor, variance: float) -> float:
    """Spec check 4: ‖mean - g‖² <= 3 Var/N (its expectation is Var/N). Returns the rel. error."""
    error = float(((estimates.mean(0) - truth) ** 2).sum())
    assert error <= 3 * variance / estimates.shape[0]
    return math.sqrt(error) / float(truth.norm())


def assert_mean_close(samples: torch.Tensor, expected: float, sigmas: float = 4.0) -> None:
    """|mean - expected| within ``sigmas`` standard errors (CLT, with the sample's own std)."""
    standard_error = float(samples.std()) / math.sqrt(samples.numel())
    assert abs(float(samples.mean()) - expected) <= sigmas * standard_error + 1e-12


def test_entrywise_unbiased_second_moment_and_expected_count() -> None:
    """g ~ N(0, I_100), s = 10, N = 20,000: relative error ~0.02, E‖ĝ‖² = ‖g‖₁²/s, E[K] = s."""
    g = torch.randn(100, generator=gen(0), dtype=torch.float64)
    probs = atomo_probabilities(g, 10.0)
    assert float(g.abs().max()) * 10 <= float(g.abs().sum())  # balanced
    estimates = batched_estimates(g, probs, N_DRAWS, seed=1)
    relative = assert_unbiased(estimates, g, atomic_variance(g, probs))
    assert relative < 0.03
    second = (estimates**2).sum(1)
    predicted = float(g.abs().sum()) ** 2 / 10
    assert atomic_second_moment(g, probs) == pytest.approx(predicted, rel=1e-12)
    assert_mean_close(second, predicted)
    assert abs(float(second.mean()) / predicted - 1) < 0.03  # the spec's 3%
    kept = (estimates != 0).sum(1).to(torch.float64)
    assert_mean_close(kept, 10.0)


def test_entrywise_messages_decode_to_an_unbiased_estimate() -> None:
    """The same through sample -> encode -> decode (fewer draws: each is a full message)."""
    g = torch.randn(100, generator=gen(0), dtype=torch.float64)
    generator = gen(2)
    draws = [
        decode(encode(sample_entrywise(g, 10.0, generator)), (100,), g.dtype) for _ in range(1000)
    ]
    assert_unbiased(torch.stack(draws), g, atomic_variance(g, atomo_probabilities(g, 10.0)))


def test_beats_uniform_sampling_by_monte_carlo() -> None:
    """Spec check 6: g ~ N(0, I_100), s = 10: ~633 (ATOMO) against ~932 (uniform)."""
    g = torch.randn(100, generator=gen(0), dtype=torch.float64)
    atomo, uniform = atomo_probabilities(g, 10.0), uniform_probabilities(g, 10.0)
    atomo_theory, uniform_theory = atomic_second_moment(g, atomo), atomic_second_moment(g, uniform)
    assert atomo_theory < 0.8 * uniform_theory
    atomo_mc = (batched_estimates(g, atomo, N_DRAWS, 3) ** 2).sum(1)
    uniform_mc = (batched_estimates(g, uniform, N_DRAWS, 4) ** 2).sum(1)
    assert_mean_close(atomo_mc, atomo_theory)
    assert_mean_close(uniform_mc, uniform_theory)
    assert float(atomo_mc.mean()) < float(uniform_mc.mean())


def test_spectral_unbiased_second_moment_and_expected_rank() -> None:
    """X 20 x 10, s = 2, N = 20,000: relative error ~0.01 and E‖X̂‖² = ‖X‖_*²/s."""
    x = torch.randn(20, 10, generator=gen(5), dtype=torch.float64)
    u, sigma, vh = spectral_decomposition(x)
    probs = atomo_probabilities(sigma, 2.0)
    assert float(sigma.max()) * 2 <= float(sigma.sum())  # balanced
    coefficients = batched_estimates(sigma, probs, N_DRAWS, seed=6)
    # X̂ is linear in the coefficients, so its mean is Σ mean(c_i) u_i v_iᵀ.
    mean_x = (u * coefficients.mean(0)) @ vh
    variance = atomic_variance(sigma, probs)
    error = float(((mean_x - x) ** 2).sum())
    assert error <= 3 * variance / N_DRAWS
    assert math.sqrt(error) / float(x.norm()) < 0.02
    second = (coefficients**2).sum(1)  # ‖X̂‖_F² (orthonormal atoms)
    assert_mean_close(second, float(sigma.sum()) ** 2 / 2)
    assert_mean_close((coefficients != 0).sum(1).to(torch.float64), 2.0)


def test_spectral_messages_decode_to_an_unbiased_estimate() -> None:
    """The same through sample -> encode (float32 factors) -> decode, 1,000 messages."""
    x = torch.randn(20, 10, generator=gen(5))
    truth = x.to(torch.float64)
    generator = gen(7)
    draws = torch.stack(
        [decode(encode(sample_spectral(x, 2.0, generator)), x.shape, x.dtype) for _ in range(1000)]
    )
    _, sigma, _ = spectral_decomposition(truth, precision=x.dtype)
    variance = atomic_variance(sigma, atomo_probabilities(sigma, 2.0))
    assert_unbiased(draws.to(torch.float64), truth, variance)


def test_any_orthonormal_basis_is_an_atomic_decomposition() -> None:
    """Eq. 3.2 in a random orthonormal basis (a stand-in for Fourier or wavelets)."""
    basis, _ = torch.linalg.qr(torch.randn(30, 30, generator=gen(8), dtype=torch.float64))
    g = torch.randn(30, generator=gen(9), dtype=torch.float64)
    weights = basis.T @ g  # g = Σ w_i basis[:, i]
    generator = gen(10)
    draws = torch.stack(
        [sparsify_decomposition(weights, basis.T, 5.0, generator) for _ in range(2000)]
    )
    assert_unbiased(draws, g, atomic_variance(weights, atomo_probabilities(weights, 5.0)))


def test_spectral_is_exact_when_the_budget_covers_the_rank() -> None:
    """Spec check 8: s >= rank(X) makes every p = 1 and decode(encode(X)) = X."""
    left = torch.randn(12, 3, generator=gen(11), dtype=torch.float64)
    x = (left @ torch.randn(3, 7, generator=gen(12), dtype=torch.float64)).to(torch.float32)
    # In float64 the float32 rounding of a rank-3 matrix is full rank (σ_4.. ~ 1e-7 here): at
    # the tensor's own precision those are noise, and are zeroed.
    _, sigma64, _ = spectral_decomposition(x.to(torch.float64))
    assert int((sigma64 > 0).sum()) == 7 and float(sigma64[3]) < 1e-6
    _, sigma, _ = spectral_decomposition(x, precision=x.dtype)
    assert int((sigma > 0).sum()) == 3
    for seed in range(5):
        sample = sample_spectral(x, 3.0, gen(seed))
        assert sample.rank == 3
        decoded = decode(encode(sample), x.shape, x.dtype)
        np.testing.assert_allclose(decoded.numpy(), x.numpy(), rtol=0, atol=1e-5)


def test_conv_and_odd_reshapes() -> None:
    assert spectral_matrix_shape((64, 64, 3, 3)) == (2048, 18)
    assert spectral_matrix_shape((3, 5, 3, 3)) == (15, 9)  # x·y odd: no pairing
    assert spectral_matrix_shape((4, 6, 5)) == (12, 10)  # conv1d, beyond the text
    assert spectral_matrix_shape((10,)) is None and spectral_matrix_shape(()) is None
    w = torch.randn(4, 2, 3, 3, generator=gen(13))
    # C order: row r holds the kernels of filters 2r and 2r + 1 (flattened (out, in) pairs).
    sample = sample_spectral(w, 100.0, gen(14))
    decoded = decode(encode(sample), w.shape, w.dtype)
    np.testing.assert_allclose(decoded.numpy(), w.numpy(), atol=1e-5)


def _entrywise_moment(x: torch.Tensor, s: float) -> float:
    flat = x.reshape(-1).to(torch.float64)
    return atomic_second_moment(flat, atomo_probabilities(flat, s))


def _spectral_moment(x: torch.Tensor, s: float) -> float:
    _, sigma, _ = spectral_decomposition(x.to(torch.float64))
    return atomic_second_moment(sigma, atomo_probabilities(sigma, s))


def test_theorem_3_8_instances() -> None:
    """Spec check 9: all-ones 8x8 (spectral wins) and a single entry (entry-wise wins)."""
    ones = torch.ones(8, 8, dtype=torch.float64)
    nuclear, l11 = float(torch.linalg.matrix_norm(ones, ord="nuc")), float(ones.abs().sum())
    assert (nuclear, l11) == pytest.approx((8.0, 64.0))
    assert 16 * nuclear**2 <= l11**2  # (n + m)‖X‖_*² <= ‖X‖₁,₁²
    assert _entrywise_moment(ones, 16) == pytest.approx(256.0)
    assert _spectral_moment(ones, 16 / 16) == pytest.approx(64.0)  # = ‖X‖_F²: no variance
    for seed in range(3):
        exact = decode(encode(sample_spectral(ones, 1.0, gen(seed))), ones.shape, ones.dtype)
        np.testing.assert_allclose(exact.numpy(), ones.numpy(), atol=1e-6)
    single = torch.zeros(8, 8, dtype=torch.float64)
    single[2, 5] = 1.0
    assert not 16 * 1.0**2 <= 1.0**2
    assert _entrywise_moment(single, 1) == pytest.approx(1.0)
    assert _spectral_moment(single, 1 / 16) == pytest.approx(16.0)


def test_lemma_3_9_norm_sandwich_on_random_matrices() -> None:
    """Spec check 10: ‖X‖₁,₁/√(nm) <= ‖X‖_* <= ‖X‖₁,₁."""
    for seed in range(20):
        g = gen(seed)
        n, m = (int(v) for v in torch.randint(1, 15, (2,), generator=g))
        x = torch.randn(n, m, generator=g, dtype=torch.float64) ** 3
        nuclear, l11 = float(torch.linalg.matrix_norm(x, ord="nuc")), float(x.abs().sum())
        assert l11 / math.sqrt(n * m) <= nuclear * (1 + 1e-12)
        assert nuclear <= l11 * (1 + 1e-12)


def test_same_seed_same_sample_and_empty_draws_decode_to_zero() -> None:
    g = torch.randn(50, generator=gen(15))
    a, b = sample_entrywise(g, 3.0, gen(16)), sample_entrywise(g, 3.0, gen(16))
    assert encode(a) == encode(b)
    zero = sample_entrywise(torch.zeros(50), 3.0, gen(17))
    assert zero.num_exact == zero.num_signed == 0
    assert not decode(encode(zero), (50,), torch.float32).any()
    empty = sample_spectral(torch.zeros(6, 4), 2.0, gen(18))
    assert empty.rank == 0 and not decode(encode(empty), (6, 4), torch.float32).any()


def test_bad_inputs_to_the_samplers() -> None:
    with pytest.raises(ValueError, match="NaN or Inf"):
        sample_entrywise(torch.tensor([1.0, math.inf]), 1.0, gen(0))
    with pytest.raises(ValueError, match="floating-point"):
        sample_entrywise(torch.tensor([1, 2]), 1.0, gen(0))
    with pytest.raises(ValueError, match="spectral form"):
        sample_spectral(torch.ones(5), 1.0, gen(0))
    with pytest.raises(ValueError, match=r"torch\.Generator"):
        sample_entrywise(torch.ones(5), 1.0, np.random.default_rng(0))  # type: ignore[arg-type]
