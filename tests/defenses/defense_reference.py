"""Slow, obviously-correct float64 references for the defenses (Python loops over numpy)."""

from __future__ import annotations

import math
import statistics

import numpy as np


def norm(x: np.ndarray) -> float:
    return math.sqrt(sum(float(v) * float(v) for v in x))


def clip(updates: np.ndarray, max_norm: float) -> np.ndarray:
    """x_i / max(1, ||x_i|| / M), row by row."""
    out = np.array(updates, dtype=np.float64)
    for i, row in enumerate(out):
        out[i] = row / max(1.0, norm(row) / max_norm)
    return out


def mean(rows: np.ndarray, weights: list[float] | None = None) -> np.ndarray:
    weights = [1.0] * len(rows) if weights is None else weights
    total = sum(weights)
    out = np.zeros(rows.shape[1])
    for w, row in zip(weights, rows, strict=True):
        out += (w / total) * row
    return out


def cosine(x: np.ndarray, y: np.ndarray) -> float:
    nx, ny = norm(x), norm(y)
    if nx == 0 or ny == 0:
        return 0.0
    return sum(float(a) * float(b) for a, b in zip(x, y, strict=True)) / (nx * ny)


def cosine_distances(updates: np.ndarray) -> np.ndarray:
    n = len(updates)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                out[i, j] = min(2.0, max(0.0, 1.0 - cosine(updates[i], updates[j])))
    return out


def flame_noiseless(updates: np.ndarray, admitted: list[int]) -> np.ndarray:
    """FLAME without noise, given the admitted set: clip to the median of all norms, average."""
    s = statistics.median(norm(row) for row in updates)
    clipped = [updates[i] / max(1.0, norm(updates[i]) / s) for i in admitted]
    return mean(np.array(clipped))


def foolsgold_weights(history: np.ndarray, kappa: float = 1.0) -> np.ndarray:
    """Fung et al. 2020, Algorithm 1, written out with loops."""
    n = len(history)
    if n == 1:
        return np.ones(1)
    cs = [[cosine(history[i], history[j]) for j in range(n)] for i in range(n)]
    v = [max(0.0, max(cs[i][j] for j in range(n) if j != i)) for i in range(n)]
    for i in range(n):
        for j in range(n):
            if i != j and v[j] > v[i]:
                cs[i][j] = cs[i][j] * v[i] / v[j]
    alpha = [min(1.0, max(0.0, 1.0 - max(cs[i][j] for j in range(n) if j != i))) for i in range(n)]
    top = max(alpha)
    if top == 0:
        return np.zeros(n)
    out = []
    for a in alpha:
        a = a / top
        if a >= 1.0:
            out.append(1.0)
        elif a <= 0.0:
            out.append(0.0)
        else:
            out.append(min(1.0, max(0.0, kappa * (math.log(a / (1.0 - a)) + 0.5))))
    return np.array(out)
