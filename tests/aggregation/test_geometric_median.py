"""Geometric median (RFA smoothed Weiszfeld): spec section 5 check 3, accuracy against a
brute-force reference, and robustness to one (or f < n/2) huge updates."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import reference_rules as ref
import torch

from flower_suite.aggregation import geometric_median

F32_MAX = float(torch.finfo(torch.float32).max)


def _points(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(15, 5))
    x[:3] += 20.0
    return x


def _accuracy_sets() -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """Varied geometry: slow and fast Weiszfeld convergence, weights, coincident points,
    a large common offset, heavy tails."""
    rng = np.random.default_rng(0)
    shifted = rng.normal(size=(15, 5))
    shifted[:3] += 20.0
    coincident = rng.normal(size=(9, 3))
    coincident[4:] = coincident[4]  # 5 of 9 equal: the answer is that point
    far = rng.normal(size=(20, 30))
    far[:9] = 50.0 + rng.normal(size=(9, 30))
    return [
        ("spec3-shifted", shifted, None),
        ("high-d", rng.normal(size=(20, 1000)) * 0.1 + 1.0, None),
        ("weighted", rng.normal(size=(12, 8)), rng.integers(1, 100, size=12).astype(float)),
        ("coincident", coincident, None),
        ("plane", rng.normal(size=(7, 2)), None),
        ("tiny-spread", rng.normal(size=(6, 4)) * 1e-4, None),
        ("big-offset", rng.normal(size=(10, 4)) * 1e3 + 1e4, None),
        ("skewed", np.cumsum(rng.normal(size=(11, 3)) ** 2, axis=0), None),
        ("cauchy", rng.standard_cauchy(size=(25, 6)), None),
        ("9-of-20-far", far, None),
    ]


ACCURACY_SETS = _accuracy_sets()
SET_IDS = [name for name, _, _ in ACCURACY_SETS]


def _spread(x: np.ndarray, v: np.ndarray) -> float:
    return float(np.median(np.linalg.norm(x - v, axis=1)))


@pytest.mark.parametrize(("name", "x", "w"), ACCURACY_SETS, ids=SET_IDS)
def test_the_two_references_agree(name: str, x: np.ndarray, w: np.ndarray | None) -> None:
    # Brute-force Weiszfeld (from the mean, to 1e-13) and BFGS on the smoothed objective.
    weiszfeld = ref.ref_geometric_median_converged(x, w)
    bfgs = ref.ref_geometric_median_scipy(x, w)
    assert np.linalg.norm(weiszfeld - bfgs) <= 1e-6 * _spread(x, weiszfeld)
    # and Weiszfeld's is the better minimiser of the objective both minimise
    objective = ref.smoothed_gm_objective
    assert objective(weiszfeld, x, w, 1e-5) <= objective(bfgs, x, w, 1e-5) * (1 + 1e-14)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(("name", "x", "w"), ACCURACY_SETS, ids=SET_IDS)
def test_defaults_are_accurate_to_1e_6_of_the_spread(
    name: str, x: np.ndarray, w: np.ndarray | None, dtype: torch.dtype
) -> None:
    # prepare: the reference sees exactly the values the rule sees
    updates = torch.from_numpy(x).to(dtype)
    exact = updates.to(torch.float64).numpy()
    expected = ref.ref_geometric_median_converged(exact, w)
    # execute
    result = geometric_median(updates, None if w is None else torch.from_numpy(w))
    # assert: within 1e-6 of the spread, plus the final rounding to float32
    ours = result.aggregate.to(torch.float64).numpy()
    rounding = np.linalg.norm(np.spacing(np.abs(expected).astype(np.float32)).astype(np.float64))
    allowed = 1e-6 * _spread(exact, expected) + (rounding if dtype == torch.float32 else 0.0)
    assert np.linalg.norm(ours - expected) <= allowed
    assert result.info["converged"] == 1.0


@pytest.mark.parametrize("seed", [0, 1])
def test_spec_check_3_matches_scipy_minimize(seed: int) -> None:
    # prepare
    x = _points(seed)
    expected = ref.ref_geometric_median_scipy(x, nu=1e-8)
    # execute
    result = geometric_median(torch.from_numpy(x), nu=1e-8, max_iter=5000, tol=1e-14)
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


def _honest_and_outliers(
    magnitude: float, f: int, *, n: int = 20, d: int = 50, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """n - f honest updates (about 1 per coordinate, spread 0.1) and f updates of norm
    ``magnitude`` in one direction (the strongest joint pull); an entry of ``inf`` stands
    for "every entry at float32 max"."""
    rng = np.random.default_rng(seed)
    honest = 1.0 + 0.1 * rng.normal(size=(n - f, d))
    if magnitude == np.inf:
        outlier = F32_MAX * np.sign(rng.normal(size=d))
    else:
        direction = rng.normal(size=d)
        outlier = magnitude * direction / np.linalg.norm(direction)
    return honest, np.vstack([honest, np.tile(outlier, (f, 1))])


MAGNITUDES = [1e12, 3e13, 1e38, F32_MAX, np.inf]
MAGNITUDE_IDS = ["1e12", "3e13", "1e38", "f32max-norm", "f32max-entries"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("f", [1, 4, 9])
@pytest.mark.parametrize("magnitude", MAGNITUDES, ids=MAGNITUDE_IDS)
def test_huge_updates_cannot_drag_the_median_out_of_the_honest_spread(
    magnitude: float, f: int, dtype: torch.dtype
) -> None:
    # prepare
    honest, x = _honest_and_outliers(magnitude, f)
    center = ref.ref_geometric_median_converged(honest)
    radius = float(np.linalg.norm(honest - center, axis=1).max())
    # execute
    result = geometric_median(torch.from_numpy(x).to(dtype))
    # assert
    ours = result.aggregate.to(torch.float64).numpy()
    assert np.isfinite(ours).all() and np.isfinite(result.info["objective"])
    assert result.info["converged"] == 1.0
    eps = f / len(x)
    # Any minimiser v of sum_i ||v - x_i|| with honest fraction 1 - eps > 1/2 satisfies
    # (1 - 2 eps) ||v - z|| <= 2 (1 - eps) max_honest ||x_i - z|| for every z (triangle
    # inequality on the objective); one outlier moves it far less: within the honest ball.
    bound = 2 * (1 - eps) / (1 - 2 * eps) if f > 1 else 1.0
    assert np.linalg.norm(ours - center) <= bound * radius


@pytest.mark.parametrize("f", [1, 9])
def test_how_far_an_outlier_is_does_not_matter(f: int) -> None:
    # A point beyond the median pulls with a unit vector, whatever its distance: at 1e12 and
    # at float32 max the median is the same; and it matches the brute-force reference at 1e12.
    results = []
    for magnitude in [1e12, 1e38, F32_MAX]:
        _, x = _honest_and_outliers(magnitude, f)
        results.append(geometric_median(torch.from_numpy(x).float()).aggregate.double().numpy())
    honest, x12 = _honest_and_outliers(1e12, f)
    expected = ref.ref_geometric_median_converged(x12.astype(np.float32).astype(np.float64))
    spread = _spread(honest, expected)
    for ours in results:
        assert np.linalg.norm(ours - expected) <= 1e-6 * spread + 1e-6


def test_the_old_stop_rule_defect_is_gone() -> None:
    # 19 honest updates (spread 0.1) and one of norm 3e13: the objective-based rule stopped
    # while the iterate was ~1e2 per coordinate away; now it moves by a small fraction of 0.1.
    honest, x = _honest_and_outliers(3e13, 1)
    with_outlier = geometric_median(torch.from_numpy(x).float()).aggregate.double()
    without = torch.from_numpy(ref.ref_geometric_median_converged(honest))
    assert float((with_outlier - without).abs().max()) < 0.05


def test_a_heavy_client_below_half_the_weight_cannot_take_over() -> None:
    # prepare: the outlier reports 45% of all examples
    honest, x = _honest_and_outliers(1e38, 1)
    weights = torch.tensor([1.0] * 19 + [19.0 * 0.45 / 0.55])
    center = ref.ref_geometric_median_converged(honest)
    radius = float(np.linalg.norm(honest - center, axis=1).max())
    # execute
    ours = geometric_median(torch.from_numpy(x).float(), weights).aggregate.double().numpy()
    # assert: the bound with eps = 0.45
    assert np.isfinite(ours).all()
    assert np.linalg.norm(ours - center) <= 2 * 0.55 / 0.1 * radius


def test_float64_inputs_near_the_float64_limit_are_scaled_exactly() -> None:
    # prepare: a power-of-two scale changes nothing but the exponent, so the result scales too
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.normal(size=(20, 30)))
    k = 2.0**900
    # execute
    small = geometric_median(x, nu=1e-12)
    large = geometric_median(x * k, nu=1e-12 * k)
    outlier = x.clone()
    outlier[0] = 1e308
    with_outlier = geometric_median(outlier)
    # assert
    assert torch.equal(large.aggregate, small.aggregate * k)
    assert large.info["iterations"] == small.info["iterations"]
    assert torch.isfinite(with_outlier.aggregate).all()
    honest = ref.ref_geometric_median_converged(x[1:].numpy())
    spread = _spread(x[1:].numpy(), honest)
    assert np.linalg.norm(with_outlier.aggregate.numpy() - honest) < 0.1 * spread


def test_spec_check_3_input_equal_to_the_iterate_gives_no_nan() -> None:
    # prepare: the starting point (the coordinate median) is the input point 0; so is the answer.
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
    kwargs = {"nu": 1e-10, "max_iter": 2000, "tol": 1e-11}
    weighted = geometric_median(x, w, **kwargs).aggregate
    plain = geometric_median(duplicated, **kwargs).aggregate
    assert torch.allclose(weighted, plain, rtol=0, atol=1e-7)
    # the starting points agree too: the weighted coordinate median is the duplicated median
    start_weighted = geometric_median(x, w, max_iter=0).aggregate
    start_plain = geometric_median(duplicated, max_iter=0).aggregate
    torch.testing.assert_close(start_weighted, start_plain, rtol=0, atol=0)


def test_result_is_a_stationary_point_of_the_l2_objective() -> None:
    # L1 distances or compounded weights converge elsewhere; the L2 gradient must vanish.
    x = _points(4)
    v = geometric_median(torch.from_numpy(x), nu=1e-10, max_iter=5000, tol=1e-15).aggregate
    diff = v.numpy() - x
    gradient = (diff / np.linalg.norm(diff, axis=1, keepdims=True)).sum(axis=0)
    assert np.abs(gradient).max() < 1e-5


def test_info_and_max_iter_zero_returns_the_weighted_coordinate_median() -> None:
    # prepare
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.normal(size=(6, 4))).float()
    w = torch.tensor([1.0, 5.0, 2.0, 2.0, 1.0, 3.0])
    # execute
    result = geometric_median(x, max_iter=0)
    weighted = geometric_median(x, w, max_iter=0)
    # assert
    assert set(result.info) == {"iterations", "converged", "objective", "spread", "movement"}
    assert result.info["iterations"] == 0.0 and result.info["converged"] == 0.0
    assert result.aggregate.dtype == torch.float32
    median = np.median(x.double().numpy(), axis=0)  # even n: mean of the two middle values
    np.testing.assert_allclose(result.aggregate.double().numpy(), median, rtol=0, atol=1e-7)
    expected = ref.ref_weighted_coordinate_median(x.double().numpy(), w.numpy())
    np.testing.assert_allclose(weighted.aggregate.double().numpy(), expected, rtol=0, atol=1e-7)


def test_the_deprecated_ftol_keyword_is_the_movement_tolerance() -> None:
    x = torch.from_numpy(_points(0))
    with pytest.warns(DeprecationWarning, match="ftol is deprecated, pass tol"):
        old = geometric_median(x, ftol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = geometric_median(x, tol=1e-12)
    assert torch.equal(old.aggregate, new.aggregate)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"nu": 0.0},
        {"nu": -1.0},
        {"nu": float("nan")},
        {"max_iter": -1},
        {"tol": -1.0},
        {"tol": float("nan")},
    ],
)
def test_invalid_hyper_parameters_raise(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="geometric_median"):
        geometric_median(torch.ones(3, 2), **kwargs)  # type: ignore[arg-type]
