"""Slow, obviously-correct float64 references for the aggregation rules (plain loops, numpy).

Each function takes a float64 ``(n, d)`` numpy array and follows the definition in
``robust-aggregation.md`` section 3 literally; the tests compare the fast torch kernels to these.
"""

from __future__ import annotations

import math

import numpy as np

Array = np.ndarray


def uniform_or(weights: Array | None, n: int) -> Array:
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64)
    return w / w.sum()


def ref_mean(x: Array, weights: Array | None = None) -> Array:
    alpha = uniform_or(weights, len(x))
    out = np.zeros(x.shape[1])
    for a, row in zip(alpha, x, strict=True):
        out += a * row
    return out


def ref_sq_distances(x: Array) -> Array:
    n = len(x)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            diff = x[i] - x[j]
            out[i, j] = float(diff @ diff)
    return out


def ref_krum_scores(x: Array, num_neighbours: int) -> list[float]:
    dist = ref_sq_distances(x)
    scores = []
    for i in range(len(x)):
        others = sorted(dist[i, j] for j in range(len(x)) if j != i)
        scores.append(sum(others[:num_neighbours]))
    return scores


def ref_krum(x: Array, f: int, num_neighbours: int | None = None) -> tuple[int, Array]:
    k = len(x) - f - 2 if num_neighbours is None else num_neighbours
    scores = ref_krum_scores(x, k)
    best = min(range(len(x)), key=lambda i: (scores[i], i))
    return best, x[best].copy()


def ref_multi_krum(
    x: Array, weights: Array | None, f: int, m: int | None = None
) -> tuple[tuple[int, ...], Array]:
    n = len(x)
    m = n - f if m is None else m
    scores = ref_krum_scores(x, n - f - 2)
    chosen = sorted(sorted(range(n), key=lambda i: (scores[i], i))[:m])
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    return tuple(chosen), ref_mean(x[chosen], w[chosen])


def median_of(values: list[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def ref_median(x: Array) -> Array:
    return np.array([median_of(list(x[:, j])) for j in range(x.shape[1])])


def ref_trimmed_mean(x: Array, beta: float) -> Array:
    n = len(x)
    cut = math.floor(beta * n)
    out = []
    for j in range(x.shape[1]):
        s = sorted(x[:, j])
        kept = s[cut : n - cut]
        out.append(sum(kept) / len(kept))
    return np.array(out)


def ref_bulyan(x: Array, f: int, variant: str = "iterative") -> tuple[tuple[int, ...], Array]:
    n = len(x)
    dist = ref_sq_distances(x)
    if variant == "iterative":
        theta = n - 2 * f
        pool = list(range(n))
        picks: list[int] = []
        for _ in range(theta):
            k = min(max(1, len(pool) - f - 2), len(pool) - 1)
            scores = {}
            for i in pool:
                others = sorted(dist[i, j] for j in pool if j != i)
                scores[i] = sum(others[:k])
            best = min(pool, key=lambda i: (scores[i], i))
            picks.append(best)
            pool.remove(best)
        beta = theta - 2 * f
        out = []
        for j in range(x.shape[1]):
            values = [x[i, j] for i in picks]
            med = median_of(values)
            closest = sorted(values, key=lambda v: abs(v - med))[:beta]
            out.append(sum(closest) / beta)
        return tuple(picks), np.array(out)
    m = n - f - 2
    scores_list = ref_krum_scores(x, n - f - 2)
    picks = sorted(range(n), key=lambda i: (scores_list[i], i))[:m]
    out = []
    for j in range(x.shape[1]):
        s = sorted(x[i, j] for i in picks)
        central = s[f : m - f]
        out.append(sum(central) / len(central))
    return tuple(picks), np.array(out)


def gm_objective(v: Array, x: Array, weights: Array | None = None) -> float:
    alpha = uniform_or(weights, len(x))
    return float(sum(a * np.linalg.norm(v - row) for a, row in zip(alpha, x, strict=True)))


def smoothed_gm_objective(v: Array, x: Array, weights: Array | None, nu: float) -> float:
    """``sum_i alpha_i h(||v - x_i||)``, ``h(r) = r`` for ``r >= nu``, ``r^2 / (2 nu) + nu / 2``
    below: the function whose minimiser smoothed Weiszfeld (``1 / max(nu, r)``) converges to."""
    alpha = uniform_or(weights, len(x))
    total = 0.0
    for a, row in zip(alpha, x, strict=True):
        r = float(np.linalg.norm(v - row))
        total += a * (r if r >= nu else r * r / (2 * nu) + nu / 2)
    return total


def weighted_median_of(values: list[float], weights: list[float]) -> float:
    """First sorted value whose cumulative weight reaches half the total; the midpoint to the
    next positive-weight value when it reaches exactly half (numpy's median for equal weights)."""
    pairs = sorted(zip(values, weights, strict=True), key=lambda p: p[0])
    total = sum(weights)
    cumulative = 0.0
    for k, (value, weight) in enumerate(pairs):
        cumulative += weight
        if 2 * cumulative >= total:
            if 2 * cumulative > total:
                return value
            following = [v for v, w in pairs[k + 1 :] if w > 0]
            return (value + following[0]) / 2 if following else value
    raise AssertionError("weights must not be all zero")


def ref_weighted_coordinate_median(x: Array, weights: Array | None = None) -> Array:
    w = [1.0] * len(x) if weights is None else [float(v) for v in weights]
    return np.array([weighted_median_of(list(x[:, j]), w) for j in range(x.shape[1])])


def ref_geometric_median(
    x: Array,
    weights: Array | None = None,
    *,
    nu: float = 1e-5,
    max_iter: int = 500,
    tol: float = 1e-10,
) -> tuple[Array, int]:
    """The library's algorithm, step by step: smoothed Weiszfeld from the weighted coordinate
    median, stopping when a step is at most ``tol * max(weighted median distance, nu)``."""
    alpha = uniform_or(weights, len(x))
    v = ref_weighted_coordinate_median(x, weights)
    it = 0
    while it < max_iter:
        distances = [float(np.linalg.norm(v - row)) for row in x]
        spread = max(weighted_median_of(distances, list(alpha)), nu)
        beta = np.array([a / max(nu, r) for a, r in zip(alpha, distances, strict=True)])
        new = ref_mean(x, beta)
        it += 1
        moved = float(np.linalg.norm(new - v))
        v = new
        if moved <= tol * spread:
            break
    return v, it


def ref_geometric_median_converged(
    x: Array, weights: Array | None = None, *, nu: float = 1e-5, max_iter: int = 200_000
) -> Array:
    """Brute force: textbook smoothed Weiszfeld from the weighted *mean*, run until a step
    is below 1e-13 of the median distance (many more steps than needed); raises otherwise."""
    alpha = uniform_or(weights, len(x))
    v = alpha @ x
    for _ in range(max_iter):
        distances = np.linalg.norm(x - v, axis=1)
        beta = alpha / np.maximum(distances, nu)
        new = beta @ x / beta.sum()
        moved = float(np.linalg.norm(new - v))
        v = new
        if moved <= 1e-13 * max(float(np.median(distances)), nu):
            return v
    raise AssertionError("reference Weiszfeld did not converge")


def ref_geometric_median_scipy(
    x: Array, weights: Array | None = None, *, nu: float = 1e-5
) -> Array:
    """Independent cross-check: BFGS on the smoothed objective with its exact gradient."""
    from scipy import optimize

    alpha = uniform_or(weights, len(x))

    def objective(v: Array) -> tuple[float, Array]:
        diff = v - x
        r = np.linalg.norm(diff, axis=1)
        value = np.where(r >= nu, r, r * r / (2 * nu) + nu / 2)
        grad = (alpha / np.maximum(r, nu)) @ diff
        return float(alpha @ value), grad

    start = ref_weighted_coordinate_median(x, weights)
    result = optimize.minimize(
        objective, start, jac=True, method="BFGS", options={"gtol": 1e-13, "maxiter": 20_000}
    )
    return np.asarray(result.x)


def ref_sign_majority(x: Array) -> Array:
    out = []
    for j in range(x.shape[1]):
        votes = sum(1 if v > 0 else -1 if v < 0 else 0 for v in x[:, j])
        out.append(float(np.sign(votes)))
    return np.array(out)


def ref_centered_clipping(
    x: Array,
    weights: Array | None,
    *,
    tau: float,
    center: Array | None = None,
    iterations: int = 1,
) -> Array:
    alpha = uniform_or(weights, len(x))
    v = np.zeros(x.shape[1]) if center is None else np.array(center, dtype=np.float64)
    for _ in range(iterations):
        step = np.zeros_like(v)
        for a, row in zip(alpha, x, strict=True):
            diff = row - v
            norm = np.linalg.norm(diff)
            step += a * diff * (min(1.0, tau / norm) if norm > 0 else 1.0)
        v = v + step
    return v
