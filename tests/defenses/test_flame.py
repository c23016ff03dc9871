"""FLAME: cosine distances, HDBSCAN majority cluster, median-norm clipping, noise."""

from __future__ import annotations

import defense_reference as ref
import numpy as np
import pytest
import torch

from flower_suite.defenses import cosine_distances, flame, hdbscan_labels, largest_cluster


def _planted(n_honest: int, n_attack: int, d: int = 40, seed: int = 0) -> torch.Tensor:
    """Honest updates share a direction (plus noise); attackers push another one, scaled x10."""
    gen = torch.Generator().manual_seed(seed)
    honest_dir = torch.randn(d, generator=gen, dtype=torch.float64)
    attack_dir = torch.randn(d, generator=gen, dtype=torch.float64)
    honest = honest_dir + 0.8 * torch.randn(n_honest, d, generator=gen, dtype=torch.float64)
    attack = 10 * (attack_dir + 0.05 * torch.randn(n_attack, d, generator=gen, dtype=torch.float64))
    return torch.cat([honest, attack]) * 0.01


def test_cosine_distances_match_reference() -> None:
    updates = _planted(5, 2)
    updates[3] = 0.0  # a zero update: distance 1 to everyone else
    ours = cosine_distances(updates).numpy()
    np.testing.assert_allclose(ours, ref.cosine_distances(updates.numpy()), atol=1e-12)
    assert (np.diag(ours) == 0).all() and np.array_equal(ours, ours.T)
    assert ours[3, 0] == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_admits_the_honest_majority_and_rejects_the_planted_cluster(seed: int) -> None:
    """7 honest + 3 scaled attackers: no attacker admitted, a majority of honest ones is."""
    updates = _planted(7, 3, seed=seed)
    result = flame(updates, noise_lambda=0.0)
    admitted = set(result.selected)
    assert admitted <= set(range(7))
    assert len(admitted) >= 6  # n // 2 + 1
    assert result.info["admitted"] == len(admitted)
    # The planted updates would drag a plain mean far towards the attack direction.
    assert result.aggregate.norm() < 0.5 * updates.mean(dim=0).norm()


@pytest.mark.parametrize("seed", range(3))
def test_noiseless_flame_matches_reference(seed: int) -> None:
    """Same admitted set as HDBSCAN on the loop-computed distances; aggregate = mean of the
    admitted updates clipped to the median norm over *all* clients."""
    updates = _planted(6, 3, seed=seed)
    result = flame(updates, noise_lambda=0.0)
    labels = hdbscan_labels(torch.from_numpy(ref.cosine_distances(updates.numpy())), 9 // 2 + 1)
    admitted = largest_cluster(labels)
    assert list(result.selected) == admitted
    expected = ref.flame_noiseless(updates.numpy(), admitted)
    np.testing.assert_allclose(result.aggregate.numpy(), expected, rtol=1e-12, atol=1e-15)
    all_norms = [ref.norm(r) for r in updates.numpy()]
    assert result.info["median-norm"] == pytest.approx(float(np.median(all_norms)), rel=1e-12)


def test_single_majority_cluster_is_found_not_all_noise() -> None:
    """min_cluster_size > n/2 leaves one cluster; sklearn's default would call it noise."""
    distances = cosine_distances(_planted(5, 0))
    labels = hdbscan_labels(distances, 3)
    assert (labels >= 0).sum() >= 3
    assert len(largest_cluster(np.array([-1, 1, 1, 0, 0, 0, -1]))) == 3
    assert largest_cluster(np.array([0, 0, 1, 1, 1, 2])) == [2, 3, 4]
    assert largest_cluster(np.array([1, 1, 0, 0])) == [0, 1]  # tie: lowest member index
    assert largest_cluster(np.array([-1, -1, -1])) == []


def test_noise_std_is_lambda_times_median_norm() -> None:
    updates = _planted(4, 0, d=60_000, seed=1)
    clean = flame(updates, noise_lambda=0.0)
    noisy = flame(updates, noise_lambda=0.01, seed=3)
    s = noisy.info["median-norm"]
    noise = (noisy.aggregate - clean.aggregate).numpy()
    assert noisy.info["noise-std"] == pytest.approx(0.01 * s)
    assert abs(noise.std() / (0.01 * s) - 1) < 0.02
    again = flame(updates, noise_lambda=0.01, seed=3)
    assert torch.equal(noisy.aggregate, again.aggregate)


def test_cluster_mask_ignores_masked_columns() -> None:
    """Columns out of the mask (e.g. BatchNorm statistics) cannot split the honest clients."""
    updates = _planted(7, 3, d=40)
    extra = torch.zeros(10, 5, dtype=torch.float64)
    extra[:4] = 50.0  # 4 honest clients with wildly different "running_var" updates
    extra[4:7] = -50.0
    wide = torch.cat([updates, extra], dim=1)
    mask = torch.ones(45, dtype=torch.bool)
    mask[40:] = False
    masked = flame(wide, noise_lambda=0.0, cluster_mask=mask)
    plain = flame(updates, noise_lambda=0.0)
    assert masked.selected == plain.selected


def test_weighted_option_uses_the_weights_of_admitted_clients() -> None:
    updates = _planted(5, 0, seed=2)
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    result = flame(updates, weights, noise_lambda=0.0, weighted=True)
    rows = list(result.selected)
    s = result.info["median-norm"]
    clipped = [updates[i] * min(1.0, s / updates[i].norm().item()) for i in rows]
    expected = sum(weights[i] * c for i, c in zip(rows, clipped, strict=True)) / weights[rows].sum()
    torch.testing.assert_close(result.aggregate, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    ("updates", "kwargs", "message"),
    [
        (torch.ones(2, 3), {}, "n >= 3"),
        (torch.ones(4, 3), {"min_cluster_size": 1}, "min_cluster_size"),
        (torch.ones(4, 3), {"min_cluster_size": 5}, "min_cluster_size"),
        (torch.ones(4, 3), {"noise_lambda": -0.1}, "noise_lambda"),
        (torch.tensor([[1.0, float("nan")], [1.0, 1.0], [2.0, 1.0]]), {}, "NaN"),
        (torch.ones(4, 3), {"cluster_mask": torch.zeros(3, dtype=torch.bool)}, "cluster_mask"),
    ],
)
def test_bad_inputs_raise(updates: torch.Tensor, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        flame(updates, **kwargs)  # type: ignore[arg-type]
