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


def ref_geometric_median(
    x: Array,
    weights: Array | None = None,
    *,
    nu: float = 1e-5,
    max_iter: int = 500,
    ftol: float = 1e-7,
) -> tuple[Array, int]:
    alpha = uniform_or(weights, len(x))
    v = ref_mean(x, alpha)
    obj = gm_objective(v, x, alpha)
    it = 0
    while it < max_iter:
        beta = np.array(
            [a / max(nu, np.linalg.norm(v - row)) for a, row in zip(alpha, x, strict=True)]
        )
        v = ref_mean(x, beta)
        prev, obj = obj, gm_objective(v, x, alpha)
        it += 1
        if abs(prev - obj) <= ftol * obj:
            break
    return v, it


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
