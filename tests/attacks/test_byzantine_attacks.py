"""Byzantine update attacks against their definitions (framework-free)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from flower_suite.attacks import (
    BYZANTINE_ATTACKS,
    alie,
    alie_z,
    constant,
    gaussian_noise,
    ipm,
    reverse_gradient,
    sign_flip,
)
from flower_suite.registry import RegistryError


def test_alie_z_matches_the_paper_value() -> None:
    """n=45, f=5: s = 18, z = Phi^-1(27/45) = 0.2533 (DETOX experiments); n=50, f=24: 1.7507."""
    assert round(alie_z(45, 5), 4) == 0.2533
    assert alie_z(50, 24) == pytest.approx(1.7507, abs=1e-3)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(min_value=3, max_value=500), data=st.data())
def test_alie_z_formula_against_scipy(n: int, data: st.DataObject) -> None:
    """z = Phi^-1((n - s) / n), s = floor(n/2 + 1) - f, for every valid (n, f)."""
    f = data.draw(st.integers(min_value=0, max_value=(n - 1) // 2))
    s = math.floor(n / 2 + 1) - f
    assert alie_z(n, f) == pytest.approx(norm.ppf((n - s) / n), abs=1e-9)


@pytest.mark.parametrize(("n", "f"), [(10, 5), (10, 6), (2, 0), (5, -1)])
def test_alie_z_rejects_invalid_counts(n: int, f: int) -> None:
    """f >= n/2 (or negative, or a single worker) is a clear ValueError."""
    with pytest.raises(ValueError, match="alie: requires"):
        alie_z(n, f)


def test_alie_is_mean_minus_z_std_with_population_std() -> None:
    """Hand-computed: rows [0, 2], [2, 6] -> mu = [1, 4], sigma (ddof=0) = [1, 2]."""
    honest = torch.tensor([[0.0, 2.0], [2.0, 6.0]])
    out = alie(honest, z=0.5)
    torch.testing.assert_close(out, torch.tensor([0.5, 3.0]))
    z = alie_z(45, 5)
    torch.testing.assert_close(alie(honest, 45, 5), torch.tensor([1 - z, 4 - 2 * z]))
    assert out.dtype == honest.dtype


def test_alie_needs_z_or_counts_and_finite_input() -> None:
    with pytest.raises(ValueError, match="either z or both n and f"):
        alie(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="NaN or Inf"):
        alie(torch.tensor([[float("nan"), 0.0]]), z=1.0)
    with pytest.raises(ValueError, match="z must be finite"):
        alie(torch.zeros(3, 2), z=float("nan"))


def test_ipm_is_minus_epsilon_times_mean() -> None:
    honest = torch.tensor([[1.0, -2.0], [3.0, 4.0]])
    torch.testing.assert_close(ipm(honest, 0.5), torch.tensor([-1.0, -0.5]))
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        ipm(honest, -1.0)


def test_local_attacks_follow_their_definitions() -> None:
    g = torch.tensor([1.0, -2.0, 0.5])
    torch.testing.assert_close(reverse_gradient(g, 100.0), torch.tensor([-100.0, 200.0, -50.0]))
    torch.testing.assert_close(sign_flip(g), -g)
    torch.testing.assert_close(constant((2, 3), -1.0), -torch.ones(2, 3))
    with pytest.raises(ValueError, match="scale must be > 0"):
        reverse_gradient(g, 0.0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        sign_flip(torch.tensor([float("inf")]))


def test_gaussian_noise_is_seeded_and_has_the_requested_moments() -> None:
    a = gaussian_noise((200_000,), 2.0, torch.Generator().manual_seed(1), mean=3.0)
    b = gaussian_noise((200_000,), 2.0, torch.Generator().manual_seed(1), mean=3.0)
    torch.testing.assert_close(a, b)
    assert abs(float(a.mean()) - 3.0) < 0.02
    assert abs(float(a.std()) - 2.0) < 0.02
    with pytest.raises(ValueError, match="std must be >= 0"):
        gaussian_noise((3,), -1.0)


def test_registry_uniform_call_shape_and_threat_models() -> None:
    """Every attack maps own (k, d) [+ honest (m, d)] to (k, d); omniscient ones need honest."""
    own = torch.randn(2, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    honest = torch.randn(7, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    omniscient = {name for name in BYZANTINE_ATTACKS if BYZANTINE_ATTACKS.create(name).needs_honest}
    assert omniscient == {"alie", "ipm"}
    for name in BYZANTINE_ATTACKS:
        attack = BYZANTINE_ATTACKS.create(name)
        out = attack(own, honest, torch.Generator().manual_seed(0))
        assert out.shape == own.shape and out.dtype == own.dtype, name
        assert torch.isfinite(out).all(), name
    # Colluding ALIE: both attackers send mu - z sigma with z from n = 9, f = 2.
    out = BYZANTINE_ATTACKS.create("alie")(own, honest)
    torch.testing.assert_close(out[0], alie(honest, 9, 2))
    torch.testing.assert_close(out[1], out[0])
    torch.testing.assert_close(
        BYZANTINE_ATTACKS.create("ipm", epsilon=2.0)(own, honest)[1], ipm(honest, 2.0)
    )
    torch.testing.assert_close(BYZANTINE_ATTACKS.create("sign_flip")(own), -own)
    with pytest.raises(ValueError, match="omniscient"):
        BYZANTINE_ATTACKS.create("ipm")(own)
    with pytest.raises(RegistryError, match="unknown byzantine attack"):
        BYZANTINE_ATTACKS.create("alei")


def test_alie_from_own_updates_is_the_colluders_estimate() -> None:
    own = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]], dtype=torch.float64)
    attack = BYZANTINE_ATTACKS.create("alie", source="own", z=1.0)
    assert not attack.needs_honest
    expected = own.mean(0) - own.std(0, correction=0)
    torch.testing.assert_close(attack(own)[2], expected)


def test_additive_gaussian_keeps_the_update_plus_noise() -> None:
    own = torch.full((1, 50_000), 5.0, dtype=torch.float64)
    out = BYZANTINE_ATTACKS.create("gaussian_noise", std=0.1, additive=True)(
        own, None, torch.Generator().manual_seed(0)
    )
    assert np.isclose(float(out.mean()), 5.0, atol=0.01)
    assert np.isclose(float(out.std()), 0.1, rtol=0.05)
