"""Geometric median (RFA smoothed Weiszfeld): spec section 5 check 3 and its traps."""

from __future__ import annotations

import numpy as np
import pytest
import reference_rules as ref
import torch
from scipy import optimize

from flower_suite.aggregation import geometric_median


def _points(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(15, 5))
    x[:3] += 20.0
    return x


def _scipy_geometric_median(x: np.ndarray) -> np.ndarray:
    def objective(v: np.ndarray) -> float:
        return float(np.linalg.norm(x - v, axis=1).sum())

    def gradient(v: np.ndarray) -> np.ndarray:
        diff = v - x
        return (diff / np.linalg.norm(diff, axis=1, keepdims=True)).sum(axis=0)

    start = np.median(x, axis=0)
    result = optimize.minimize(
        objective, start, jac=gradient, method="BFGS", options={"gtol": 1e-12, "maxiter": 10_000}
    )
    return result.x


@pytest.mark.parametrize("seed", [0, 1])
def test_spec_check_3_matches_scipy_minimize(seed: int) -> None:
    # prepare
    x = _points(seed)
    expected = _scipy_geometric_median(x)
    # execute
    result = geometric_median(torch.from_numpy(x), nu=1e-8, max_iter=5000, ftol=1e-12)
    # assert
    ours = result.aggregate.numpy()
    assert np.abs(ours - expected).max() < 1e-4
    ours_obj = ref.gm_objective(ours, x)
    ref_obj = ref.gm_objective(expected, x)
    assert ours_obj <= ref_obj * (1 + 1e-8)
    assert result.info["converged"] == 1.0
    assert result.info["objective"] == pytest.approx(ours_obj, rel=1e-12)
    # the three shifted points do not drag it: far closer to the clean mean than the mean is
    clean = x[3:].mean(axis=0)
    assert np.linalg.norm(ours - clean) < 0.25 * np.linalg.norm(x.mean(axis=0) - clean)


def test_spec_check_3_input_equal_to_the_iterate_gives_no_nan() -> None:
    # prepare: the starting point (the mean) is the input point 0; so is the answer.
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    # execute
    result = geometric_median(x, nu=1e-8, max_iter=50)
    # assert
    assert torch.isfinite(result.aggregate).all()
    assert torch.equal(result.aggregate, torch.zeros(2))
    assert np.isfinite(result.info["objective"])


def test_all_points_identical_converges_immediately() -> None:
    x = torch.ones(4, 3, dtype=torch.float64) * 2.5
    result = geometric_median(x)
    assert torch.equal(result.aggregate, x[0])
    assert result.info["converged"] == 1.0 and result.info["iterations"] == 1.0


def test_integer_weights_equal_duplicated_points() -> None:
    # Equal sample counts must not collapse (a peer built weights with a set).
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.normal(size=(4, 3)))
    w = torch.tensor([3.0, 1.0, 1.0, 2.0], dtype=torch.float64)
    duplicated = x[[0, 0, 0, 1, 2, 3, 3]]
    kwargs = {"nu": 1e-10, "max_iter": 2000, "ftol": 1e-14}
    weighted = geometric_median(x, w, **kwargs).aggregate
    plain = geometric_median(duplicated, **kwargs).aggregate
    assert torch.allclose(weighted, plain, rtol=0, atol=1e-7)


def test_result_is_a_stationary_point_of_the_l2_objective() -> None:
    # L1 distances or compounded weights converge elsewhere; the L2 gradient must vanish.
    x = _points(4)
    v = geometric_median(torch.from_numpy(x), nu=1e-10, max_iter=5000, ftol=1e-15).aggregate
    diff = v.numpy() - x
    gradient = (diff / np.linalg.norm(diff, axis=1, keepdims=True)).sum(axis=0)
    assert np.abs(gradient).max() < 1e-5


def test_info_and_max_iter_zero_returns_the_weighted_mean() -> None:
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.normal(size=(6, 4))).float()
    result = geometric_median(x, max_iter=0)
    assert set(result.info) == {"iterations", "converged", "objective"}
    assert result.info["iterations"] == 0.0 and result.info["converged"] == 0.0
    assert result.aggregate.dtype == torch.float32
    assert torch.allclose(result.aggregate, x.mean(dim=0), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs", [{"nu": 0.0}, {"nu": -1.0}, {"nu": float("nan")}, {"max_iter": -1}, {"ftol": -1.0}]
)
def test_invalid_hyper_parameters_raise(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="geometric_median"):
        geometric_median(torch.ones(3, 2), **kwargs)  # type: ignore[arg-type]
