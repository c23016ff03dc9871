"""ATOMO's variance-optimal probabilities: the spec's golden vectors (§5 checks 1-3, 6, 7),
the slow references, scipy's SLSQP, and the QSGD / TernGrad / ℓ_q special cases."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from atomo_reference import algorithm1_probabilities, exact_probabilities, kkt_probabilities
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from flower_suite.compression import (
    atomic_second_moment,
    atomic_variance,
    atomo_probabilities,
    uniform_probabilities,
)

F = Fraction
# (λ, s, p, f = Σλ²/p, f for uniform p = s/n or None): spec §5 check 1.
GOLDEN = [
    ([3, 2, 1], F(1), [F(1, 2), F(1, 3), F(1, 6)], 36, 42),
    ([3, 2, 1], F(2), [F(1), F(2, 3), F(1, 3)], 18, 21),
    ([3, 2, 1], F(5, 2), [F(1), F(1), F(1, 2)], 15, F(84, 5)),
    ([4, 1, 1], F(2), [F(1), F(1, 2), F(1, 2)], 20, 27),
    ([10, 1, 1, 1, 1], F(3), [F(1), F(1, 2), F(1, 2), F(1, 2), F(1, 2)], 108, F(520, 3)),
    ([0, 2, 0, 1], F(3, 2), [F(0), F(1), F(0), F(1, 2)], 6, None),
    ([1, 1], F(5), [F(1), F(1)], 2, None),
]


def t64(values: list[float] | list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize(("lam", "s", "p", "f", "f_uniform"), GOLDEN)
def test_golden_probabilities_and_second_moments(
    lam: list[int], s: Fraction, p: list[Fraction], f: int, f_uniform: Fraction | None
) -> None:
    # Exact arithmetic agrees with the table (so the table itself is right)...
    assert exact_probabilities(lam, s) == p
    # ...and the float64 implementation agrees with it to round-off.
    probs = atomo_probabilities(t64(lam), float(s))
    assert probs.tolist() == pytest.approx([float(x) for x in p], abs=1e-15)
    assert atomic_second_moment(t64(lam), probs) == pytest.approx(f, rel=1e-14)
    if f_uniform is not None:
        uniform = uniform_probabilities(t64(lam), float(s))
        assert atomic_second_moment(t64(lam), uniform) == pytest.approx(float(f_uniform), 1e-14)


def test_balanced_second_moment_is_l1_squared_over_s() -> None:
    lam = t64([3, 2, 1])
    assert atomic_second_moment(lam, atomo_probabilities(lam, 1.0)) == pytest.approx(36.0)
    assert atomic_variance(lam, atomo_probabilities(lam, 1.0)) == pytest.approx(36.0 - 14.0)


def test_clip_and_forget_is_worse_than_redistributing() -> None:
    """Spec §6.3: p = min(1, s|λ|/‖λ‖₁) for λ = [4, 1, 1], s = 2 spends 5/3 and gives 22."""
    lam = t64([4, 1, 1])
    clipped = (lam.abs() * 2 / lam.abs().sum()).clamp(max=1.0)
    assert float(clipped.sum()) == pytest.approx(5 / 3)
    assert atomic_second_moment(lam, clipped) == pytest.approx(22.0)
    optimal = atomo_probabilities(lam, 2.0)
    assert float(optimal.sum()) == pytest.approx(2.0)
    assert atomic_second_moment(lam, optimal) == pytest.approx(20.0)


def test_sign_invariance_and_permutation_equivariance() -> None:
    rng = np.random.default_rng(1)
    lam = t64(list(rng.standard_normal(30) * np.exp(rng.standard_normal(30))))
    for s in (0.7, 3.0, 12.5, 29.0):
        probs = atomo_probabilities(lam, s)
        signs = t64(list(rng.choice([-1.0, 1.0], size=30)))
        assert torch.equal(atomo_probabilities(lam * signs, s), probs)
        perm = torch.from_numpy(rng.permutation(30))
        # Equal up to the summation order of ‖λ‖₁ (a few ulps).
        permuted = atomo_probabilities(lam[perm], s).numpy()
        np.testing.assert_allclose(permuted, probs[perm].numpy(), rtol=1e-14, atol=0)


def test_ties_straddling_the_cap_are_treated_alike() -> None:
    probs = atomo_probabilities(t64([5, 5, 5, 1, 1]), 3.5)
    assert probs[0] == probs[1] == probs[2]
    assert float(probs.sum()) == pytest.approx(3.5)


@pytest.mark.parametrize("seed", range(6))
def test_constraints_monotonicity_and_balanced_closed_form(seed: int) -> None:
    """Spec §5 check 2."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    lam = rng.standard_normal(n) * np.exp(2 * rng.standard_normal(n))
    lam[rng.random(n) < 0.2] = 0.0
    a = np.abs(lam)
    nnz = int((a > 0).sum())
    for s in rng.uniform(0.05, nnz + 2, size=8):
        probs = atomo_probabilities(t64(list(lam)), float(s)).numpy()
        assert (probs[a == 0] == 0).all()
        if s <= nnz:
            assert abs(probs.sum() - s) <= 1e-12 * max(1.0, s)
            assert ((probs[a > 0] > 0) & (probs[a > 0] <= 1)).all()
        else:
            assert (probs[a > 0] == 1).all()
        order = np.argsort(-a, kind="stable")
        assert (np.diff(probs[order]) <= 1e-15).all()  # monotone in |λ|
        if a.any() and s <= a.sum() / a.max():
            np.testing.assert_allclose(probs, a * s / a.sum(), rtol=1e-12, atol=0)


_magnitude = st.one_of(
    st.just(0.0),
    st.floats(1e-6, 1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from([1.0, 2.0, 3.0]),  # ties
)


@settings(max_examples=100)
@given(
    lam=st.lists(
        st.builds(lambda m, neg: -m if neg else m, _magnitude, st.booleans()),
        min_size=1,
        max_size=25,
    ),
    budget_fraction=st.floats(0.01, 1.2),
)
@example(lam=[4.0, 1.0, 1.0], budget_fraction=2 / 3)
@example(lam=[3.0, 2.0, 1.0], budget_fraction=2.5 / 3)  # the balance test holds with equality
@example(lam=[0.0, 0.0], budget_fraction=0.5)
def test_fast_probabilities_match_both_slow_references(
    lam: list[float], budget_fraction: float
) -> None:
    s = max(1e-3, budget_fraction * len(lam))
    fast = atomo_probabilities(t64(lam), s).tolist()
    assert fast == pytest.approx(algorithm1_probabilities(lam, s), rel=1e-9, abs=1e-12)
    assert fast == pytest.approx(kkt_probabilities(lam, s), rel=1e-9, abs=1e-12)


def _slsqp_optimum(lam: np.ndarray, s: float) -> float:
    n = lam.size
    result = minimize(
        lambda p: float(np.sum(lam**2 / p)),
        np.full(n, s / n),
        jac=lambda p: -(lam**2) / p**2,
        method="SLSQP",
        bounds=[(1e-9, 1.0)] * n,
        constraints=[{"type": "eq", "fun": lambda p: p.sum() - s, "jac": lambda p: np.ones(n)}],
        options={"maxiter": 1000, "ftol": 1e-14},
    )
    assert abs(result.x.sum() - s) < 1e-6 and result.x.max() <= 1 + 1e-9
    return float(result.fun)


def _ours_over_slsqp(rng: np.random.Generator) -> float:
    n = int(rng.integers(2, 21))
    lam = rng.standard_normal(n) * np.exp(rng.standard_normal(n))
    s = float(rng.uniform(0.5, n - 0.5))
    ours = atomic_second_moment(t64(list(lam)), atomo_probabilities(t64(list(lam)), s))
    return ours / _slsqp_optimum(lam, s)


def test_no_worse_than_slsqp_on_50_random_instances() -> None:
    """Spec §5 check 3: f(atomo) <= (1 + 1e-6) f(SLSQP) under the same constraints."""
    rng = np.random.default_rng(2024)
    ratios = [_ours_over_slsqp(rng) for _ in range(50)]  # one BLAS thread: conftest.py
    assert max(ratios) <= 1 + 1e-6


def test_beats_uniform_sampling_analytically() -> None:
    """Spec §5 check 6: Σλ²/p <= (n/s)‖λ‖₂², on every golden vector and random ones."""
    rng = np.random.default_rng(3)
    cases = [(lam, float(s)) for lam, s, *_ in GOLDEN]
    cases += [(list(rng.standard_normal(40)), float(rng.uniform(1, 39))) for _ in range(20)]
    for lam, s in cases:
        atoms = t64(lam)
        ours = atomic_second_moment(atoms, atomo_probabilities(atoms, s))
        uniform = atomic_second_moment(atoms, uniform_probabilities(atoms, s))
        assert ours <= uniform * (1 + 1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_qsgd_and_terngrad_budgets_give_their_probabilities(seed: int) -> None:
    """Spec §5 check 7 and Theorem 3.7: E‖L_q(g)‖² = ‖g‖₁‖g‖_q for q = 2, 3, inf."""
    g = torch.randn(200, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    l1 = float(g.abs().sum())
    for q in (2.0, 3.0, math.inf):
        norm_q = float(torch.linalg.vector_norm(g, ord=q))
        probs = atomo_probabilities(g, l1 / norm_q)
        np.testing.assert_allclose(
            probs.numpy(), (g.abs() / norm_q).numpy(), rtol=1e-12, atol=1e-15
        )
        assert atomic_second_moment(g, g.abs() / norm_q) == pytest.approx(l1 * norm_q, rel=1e-12)


@pytest.mark.parametrize("budget", [0, -1.0, math.nan, math.inf, "2", True, None])
def test_invalid_budgets_are_refused(budget: object) -> None:
    with pytest.raises(ValueError, match="budget"):
        atomo_probabilities(t64([1, 2]), budget)  # type: ignore[arg-type]


def test_invalid_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        atomo_probabilities(t64([1.0, math.nan]), 1.0)
    with pytest.raises(ValueError, match="1-D"):
        atomo_probabilities(torch.ones(2, 2), 1.0)
    with pytest.raises(ValueError, match="probability"):
        atomic_second_moment(t64([1, 2]), t64([0.5, 0.0]))
