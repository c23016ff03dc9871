"""Weak DP (clip, aggregate, noise once) and CRFL (global-model clipping and noise)."""

from __future__ import annotations

import defense_reference as ref
import numpy as np
import pytest
import torch

from flower_suite.defenses import clip_parameters, crfl, gaussian_noise, norm_clipping, weak_dp


def _updates(n: int, d: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen, dtype=torch.float64) * scale


def test_weak_dp_noise_has_the_right_std_and_is_added_once() -> None:
    """Spec §9 check 9: on d = 1e5 the added noise has sample std within 5% (we ask 2%) of sigma,
    mean ~0, and it is exactly one draw from the seeded generator (applied once)."""
    # Prepare
    updates, sigma = _updates(5, 100_000, scale=0.01), 0.005
    # Execute
    noisy = weak_dp(updates, max_norm=2.0, noise_std=sigma, seed=7)
    clean = norm_clipping(updates, max_norm=2.0)
    # Assert
    noise = (noisy.aggregate - clean.aggregate).numpy()
    assert abs(noise.std() / sigma - 1) < 0.02
    assert abs(noise.mean()) < 4 * sigma / np.sqrt(noise.size)
    one_draw = gaussian_noise(100_000, sigma, torch.Generator().manual_seed(7)).numpy()
    np.testing.assert_allclose(noise, one_draw, rtol=0, atol=1e-15)
    assert noisy.info["noise-std"] == sigma and "fraction-clipped" in noisy.info


def test_weak_dp_is_seeded_and_zero_noise_is_plain_ndc() -> None:
    updates = _updates(6, 50)
    a = weak_dp(updates, max_norm=1.0, noise_std=0.1, seed=1).aggregate
    b = weak_dp(updates, max_norm=1.0, noise_std=0.1, seed=1).aggregate
    c = weak_dp(updates, max_norm=1.0, noise_std=0.1, seed=2).aggregate
    assert torch.equal(a, b) and not torch.equal(a, c)
    zero = weak_dp(updates, max_norm=1.0, noise_std=0.0, seed=1).aggregate
    assert torch.equal(zero, norm_clipping(updates, max_norm=1.0).aggregate)


def test_weak_dp_generator_advances_between_rounds() -> None:
    """A caller-owned generator gives fresh noise every round, reproducibly."""
    updates = _updates(4, 30)
    gen = torch.Generator().manual_seed(3)
    first = weak_dp(updates, max_norm=1.0, noise_std=0.1, generator=gen).aggregate
    second = weak_dp(updates, max_norm=1.0, noise_std=0.1, generator=gen).aggregate
    assert not torch.equal(first, second)


def test_weak_dp_composes_with_a_rule() -> None:
    """Weak DP over the coordinate-wise median: median of clipped updates, plus noise."""
    from flower_suite.aggregation import coordinate_median
    from flower_suite.defenses import clip_to_norm

    updates = _updates(5, 40)
    result = weak_dp(updates, max_norm=1.0, noise_std=0.0, aggregation="median")
    expected = coordinate_median(clip_to_norm(updates, 1.0).updates).aggregate
    assert torch.equal(result.aggregate, expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_norm": -1.0, "noise_std": 0.1}, "max_norm"),
        ({"max_norm": 1.0, "noise_std": -0.1}, "noise_std"),
        ({"max_norm": 1.0, "noise_std": float("nan")}, "noise_std"),
    ],
)
def test_weak_dp_bad_parameters(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        weak_dp(torch.ones(3, 2), **kwargs)


def _crfl_reference(
    updates: np.ndarray, weights: list[float], global_params: np.ndarray, rho: float
) -> np.ndarray:
    """Noiseless CRFL step: clip(w + weighted mean, rho) - w, with loops."""
    new = global_params + ref.mean(updates, weights)
    return new / max(1.0, ref.norm(new) / rho) - global_params


@pytest.mark.parametrize("rho", [0.5, 3.0, 1e6])
def test_crfl_matches_reference_without_noise(rho: float) -> None:
    updates, w = _updates(6, 25, seed=1, scale=0.2), _updates(1, 25, seed=2)[0]
    weights = torch.tensor([1.0, 2.0, 3.0, 1.0, 1.0, 5.0], dtype=torch.float64)
    result = crfl(updates, weights, global_params=w, rho=rho, sigma=0.0)
    expected = _crfl_reference(updates.numpy(), weights.tolist(), w.numpy(), rho)
    np.testing.assert_allclose(result.aggregate.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert (w + result.aggregate).norm().item() <= rho * (1 + 1e-12)
    assert result.info["model-clipped"] == float(result.info["model-norm"] > rho)


def test_crfl_noise_std_and_mask() -> None:
    """Masked-out entries (integer buffers) are neither clipped nor perturbed; the others get
    N(0, sigma^2) noise."""
    d = 60_000
    updates = torch.zeros(3, d, dtype=torch.float64)
    w = torch.ones(d, dtype=torch.float64)
    mask = torch.ones(d, dtype=torch.bool)
    mask[:10] = False
    result = crfl(updates, global_params=w, rho=1e9, sigma=0.02, seed=0, param_mask=mask)
    step = result.aggregate.numpy()
    assert (step[:10] == 0).all()
    assert abs(step[10:].std() / 0.02 - 1) < 0.02
    clipped, norm = clip_parameters(w, rho=10.0, mask=mask)
    assert torch.equal(clipped[:10], w[:10])
    assert clipped[mask].norm().item() == pytest.approx(10.0)
    assert norm == pytest.approx(float(np.sqrt(d - 10)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rho": 0.0, "sigma": 0.1}, "rho"),
        ({"rho": 1.0, "sigma": -1.0}, "sigma"),
        ({"rho": 1.0, "sigma": 0.1, "global_params": torch.ones(3)}, "global_params"),
        ({"rho": 1.0, "sigma": 0.1, "global_params": torch.full((2,), float("nan"))}, "finite"),
    ],
)
def test_crfl_bad_parameters(kwargs: dict[str, object], message: str) -> None:
    kwargs = {"global_params": torch.ones(2), **kwargs}
    with pytest.raises(ValueError, match=message):
        crfl(torch.ones(3, 2), **kwargs)  # type: ignore[arg-type]
