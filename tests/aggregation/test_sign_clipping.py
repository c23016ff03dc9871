"""signSGD majority vote (spec section 5 check 5) and centered clipping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flower_suite.aggregation import centered_clipping, sign_majority, weighted_mean


def test_spec_check_5_seven_honest_beat_three_constant_attackers() -> None:
    # prepare: 7 honest workers positive on every coordinate, 3 sending the constant -1.
    rng = np.random.default_rng(0)
    honest = torch.from_numpy(rng.uniform(0.01, 1.0, size=(7, 20))).float()
    attackers = -torch.ones(3, 20)
    # execute
    vote = sign_majority(torch.cat([honest, attackers])).aggregate
    # assert
    assert torch.equal(vote, torch.ones(20))


def test_spec_check_5_exact_tie_gives_zero() -> None:
    x = torch.tensor([[1.0, 0.3, 0.0], [-2.0, 0.2, 0.0], [0.5, 0.0, 4.0], [-0.5, -0.1, -4.0]])
    assert sign_majority(x).aggregate.tolist() == [0.0, 1.0, 0.0]


def test_sign_majority_keeps_dtype_and_ignores_magnitudes_and_weights() -> None:
    x = torch.tensor([[1e6, -1e-6], [-1e-9, -3.0], [-2.0, 5.0]], dtype=torch.float64)
    w = torch.tensor([100.0, 1.0, 1.0], dtype=torch.float64)
    out = sign_majority(x, w).aggregate
    assert out.dtype == torch.float64
    assert out.tolist() == [-1.0, -1.0]


def test_clipping_with_a_huge_radius_is_the_weighted_mean() -> None:
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(5, 8)))
    w = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    out = centered_clipping(x, w, tau=1e9)
    assert torch.allclose(out.aggregate, weighted_mean(x, w).aggregate, rtol=0, atol=1e-14)
    assert out.info["clipped"] == 0.0


def test_clipping_bounds_the_influence_of_an_outlier() -> None:
    # prepare: 4 inputs at the centre's neighbourhood, one at distance 1e6.
    x = torch.zeros(5, 3, dtype=torch.float64)
    x[:4, 0] = 0.1
    x[4, 1] = 1e6
    center = torch.full((3,), 0.1, dtype=torch.float64)
    center[1:] = 0.0
    # execute
    out = centered_clipping(x, tau=1.0, center=center).aggregate
    # assert: the outlier moves the centre by at most tau / n = 0.2
    assert float((out - center).norm()) <= 1.0 / 5 + 1e-12
    assert float(out[1]) == pytest.approx(0.2, rel=1e-12)


def test_clipping_iterations_move_towards_the_cluster_and_do_not_mutate_center() -> None:
    x = torch.full((6, 2), 3.0, dtype=torch.float64)
    center = torch.zeros(2, dtype=torch.float64)
    one = centered_clipping(x, tau=1.0, center=center, iterations=1).aggregate
    many = centered_clipping(x, tau=1.0, center=center, iterations=10).aggregate
    assert float(one.norm()) == pytest.approx(1.0)
    assert torch.allclose(many, x[0], atol=1e-12)
    assert torch.equal(center, torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tau": 0.0}, "tau"),
        ({"tau": -1.0}, "tau"),
        ({"tau": float("nan")}, "tau"),
        ({"tau": 1.0, "iterations": 0}, "iterations"),
        ({"tau": 1.0, "center": torch.zeros(3)}, "center"),
        ({"tau": 1.0, "center": torch.tensor([0.0, float("inf")])}, "center"),
    ],
)
def test_clipping_parameters_are_validated(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=f"centered_clipping: {match}"):
        centered_clipping(torch.ones(4, 2), **kwargs)  # type: ignore[arg-type]
