"""One client in 20 sends an update of norm 1e38 or float32 max: every robust rule must stay
finite and inside the honest updates' spread (float32 inputs, the strategies' buffer dtype)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from flower_suite.aggregation import (
    AggregationResult,
    bulyan,
    centered_clipping,
    coordinate_median,
    geometric_median,
    krum,
    multi_krum,
    pairwise_sq_distances,
    sign_majority,
    trimmed_mean,
)

F32_MAX = float(torch.finfo(torch.float32).max)
N, D, BAD = 20, 64, 7  # the outlier's row: neither first nor last


def _updates(kind: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(honest (19, d), all (20, d)) float32; honest about 1 per coordinate, spread 0.1."""
    rng = np.random.default_rng(seed)
    honest = (1.0 + 0.1 * rng.normal(size=(N - 1, D))).astype(np.float32)
    direction = rng.normal(size=D)
    if kind == "f32max-entries":  # every entry at float32 max: norm 8 x float32 max
        outlier = F32_MAX * np.sign(direction)
    else:
        norm = {"1e38": 1e38, "f32max-norm": F32_MAX}[kind]
        outlier = norm * direction / np.linalg.norm(direction)
    rows = np.insert(honest, BAD, outlier.astype(np.float32), axis=0)
    assert np.isfinite(rows).all()
    return torch.from_numpy(honest), torch.from_numpy(rows)


def _honest_median(honest: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.median(honest.double().numpy(), axis=0))


Rule = Callable[[torch.Tensor], AggregationResult]
RULES: dict[str, Callable[[torch.Tensor], Rule]] = {
    "krum": lambda h: lambda x: krum(x, num_malicious_nodes=1),
    "multi_krum": lambda h: lambda x: multi_krum(x, num_malicious_nodes=1),
    "median": lambda h: coordinate_median,
    "trimmed_mean": lambda h: lambda x: trimmed_mean(x, beta=0.1),
    "bulyan": lambda h: lambda x: bulyan(x, num_malicious_nodes=1),
    "bulyan_one_shot": lambda h: lambda x: bulyan(x, num_malicious_nodes=1, variant="one_shot"),
    "geometric_median": lambda h: geometric_median,
    # centred on the honest median (a previous round's aggregate), tau the honest radius
    "centered_clipping": lambda h: (
        lambda x: centered_clipping(
            x, tau=_radius(h), center=_honest_median(h).float(), iterations=3
        )
    ),
}
COORDINATE_WISE = {"median", "trimmed_mean", "bulyan", "bulyan_one_shot", "krum", "multi_krum"}
KINDS = ["1e38", "f32max-norm", "f32max-entries"]


def _radius(honest: torch.Tensor) -> float:
    """Largest distance of an honest update to the honest mean (float64)."""
    h = honest.double()
    return float(torch.linalg.vector_norm(h - h.mean(dim=0), dim=1).max())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(RULES))
def test_one_huge_update_stays_outside_the_aggregate(name: str, kind: str) -> None:
    # prepare
    honest, updates = _updates(kind)
    rule = RULES[name](honest)
    h = honest.double()
    # execute
    result = rule(updates)
    # assert: finite, within the honest ball around the honest mean ...
    aggregate = result.aggregate.double()
    assert result.aggregate.dtype == torch.float32
    assert bool(torch.isfinite(aggregate).all())
    assert all(np.isfinite(v) for v in result.info.values())
    assert float(torch.linalg.vector_norm(aggregate - h.mean(dim=0))) <= _radius(honest)
    # ... and, for rules built from honest coordinates, inside their bounding box
    if name in COORDINATE_WISE:
        assert bool((aggregate >= h.amin(dim=0)).all() and (aggregate <= h.amax(dim=0)).all())
    assert BAD not in result.selected


@pytest.mark.parametrize("kind", KINDS)
def test_one_huge_update_flips_no_clear_sign_vote(kind: str) -> None:
    # prepare: honest votes on sign(update - honest median), so both signs occur
    honest, updates = _updates(kind)
    center = _honest_median(honest).float()
    # execute
    vote = sign_majority(updates - center).aggregate
    # assert: one voter can flip no coordinate whose honest margin is 3 or more (19 honest
    # votes: odd margins), and nothing but -1, 0, 1 comes out
    honest_votes = torch.sign(honest - center).sum(dim=0)
    clear = honest_votes.abs() >= 3
    assert bool(torch.isin(vote, torch.tensor([-1.0, 0.0, 1.0])).all())
    torch.testing.assert_close(vote[clear], torch.sign(honest_votes[clear]))


@pytest.mark.parametrize("kind", KINDS)
def test_honest_distances_survive_a_huge_update(kind: str) -> None:
    # The pairwise distances Krum and Bulyan rank by: the honest block must stay accurate (a
    # centring on the column mean, which the outlier drags to 1e37, leaves only rounding noise
    # of ~1e58 there), and the outlier's distances must be finite.
    honest, updates = _updates(kind)
    distances = pairwise_sq_distances(updates)
    keep = [i for i in range(N) if i != BAD]
    exact = pairwise_sq_distances(honest.double())
    assert bool(torch.isfinite(distances).all())
    torch.testing.assert_close(distances[keep][:, keep], exact, rtol=1e-12, atol=1e-12)
