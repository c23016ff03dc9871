"""BBP-MAP matching of one layer's hidden units (FedMA, dissertation chapter 5).

Implements spec ``shared/spec/fedma.md`` section 4: the PFNM / Beta-Bernoulli-process MAP
score matrix in natural parameters, iterative per-client Hungarian assignment with
:func:`scipy.optimize.linear_sum_assignment`, and creation of new global units (with the
``-2 log k`` size penalty and a hard maximum width, section 8).

For client ``j`` with unit vectors ``w_jl`` (``u_l = s * w_jl``) and global units with natural
mean ``a_i``, precision ``p_i`` and popularity ``m_i`` (other clients only), the score is::

    S[l, i]       = sum_d (a_i + u_l)^2 / (p_i + s) - a_i^2 / p_i
                    + rho * log(min(m_i, cap) / (J - min(m_i, cap)))            (i < L)
    S[l, L+k-1]   = sum_d (s0 mu0 + u_l)^2 / (s0 + s) - (s0 mu0)^2 / s0
                    + 2 log(gamma0 / J) - 2 log k                               (k = 1..K)

with ``s0 = 1/sigma0_sq`` and ``s = 1/sigma_sq`` (variances are stored explicitly).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import linear_sum_assignment

__all__ = ["MatchResult", "bbp_map_scores", "match_layer"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class MatchResult:
    """Outcome of :func:`match_layer`.

    Attributes
    ----------
    global_weights:
        ``(L', D)`` global units: the plain mean of the matched client units (default) or the
        posterior mean ``a_i / p_i`` (``aggregation="posterior"``).
    assignments:
        One injective ``int64`` array per client (in input order), ``assignments[j][l]`` is the
        global index of client ``j``'s unit ``l``.
    counts:
        ``(L',)`` number of clients matched to each global unit (``m_i``).
    posterior_mean:
        ``(L', D)`` posterior mean ``a_i / p_i`` (independent of ``aggregation``).
    """

    global_weights: FloatArray
    assignments: list[IntArray]
    counts: IntArray
    posterior_mean: FloatArray

    @property
    def width(self) -> int:
        """The global width ``L'``."""
        return int(self.global_weights.shape[0])


def _per_coordinate(value: ArrayLike, dim: int, name: str) -> FloatArray:
    arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (dim,)).copy()
    if name != "mu0" and np.any(arr <= 0):
        raise ValueError(f"{name} must be positive")
    return arr


def bbp_map_scores(
    units: FloatArray,
    a: FloatArray,
    p: FloatArray,
    m: IntArray,
    *,
    n_clients: int,
    s0: FloatArray,
    s: FloatArray,
    mu0: FloatArray,
    gamma0: float,
    n_new: int,
    popularity_weight: float = 1.0,
    popularity_cap: int = 10,
) -> FloatArray:
    """Score matrix ``S`` (higher is better) of spec section 4, shape ``(L_j, L + n_new)``.

    ``units`` is ``(L_j, D)`` (raw client weights ``w_jl``), ``a`` and ``p`` are ``(L, D)`` natural
    means and precisions of the global units, ``m`` their popularity counting the other clients
    only. ``s0``, ``s`` and ``mu0`` are per-coordinate ``(D,)`` arrays.
    """
    u = units * s
    n_units = u.shape[0]
    scores = np.empty((n_units, a.shape[0] + n_new), dtype=np.float64)
    if a.shape[0]:
        inv_ps = 1.0 / (p + s)
        # sum_d (a+u)^2/(p+s) - a^2/p, expanded so that it is a pair of matrix products.
        const = np.sum(a * a * inv_ps - a * a / p, axis=1)
        if np.all(inv_ps == inv_ps[:, :1]):  # scalar variances: one matrix product suffices
            cross = 2.0 * u @ (a * inv_ps).T + np.outer(np.sum(u * u, axis=1), inv_ps[:, 0])
        else:
            cross = 2.0 * u @ (a * inv_ps).T + (u * u) @ inv_ps.T
        m_cap = np.minimum(m, popularity_cap).astype(np.float64)
        pop = popularity_weight * np.log(m_cap / (n_clients - m_cap))
        scores[:, : a.shape[0]] = cross + const + pop
    if n_new:
        prior = s0 * mu0
        norm = np.sum((prior + u) ** 2 / (s0 + s) - prior**2 / s0, axis=1)
        k = np.arange(1, n_new + 1, dtype=np.float64)
        new = 2.0 * np.log(gamma0 / n_clients) - 2.0 * np.log(k)
        scores[:, a.shape[0] :] = norm[:, None] + new[None, :]
    return scores


def match_layer(
    weights: Sequence[ArrayLike],
    *,
    gamma0: float = 7.0,
    sigma0_sq: ArrayLike = 1.0,
    sigma_sq: ArrayLike = 1.0,
    mu0: ArrayLike = 0.0,
    iterations: int = 5,
    seed: int = 0,
    max_width: int | None = None,
    unit_cap: int = 700,
    popularity_weight: float = 1.0,
    popularity_cap: int = 10,
    aggregation: str = "mean",
) -> MatchResult:
    """Match the hidden units of one layer across ``J`` clients with BBP-MAP (spec section 4).

    Parameters
    ----------
    weights:
        ``J`` arrays of shape ``(L_j, D)``: client ``j``'s unit vectors (weights with the bias
        appended, input side already aligned to the previous global layer).
    gamma0:
        New-unit discovery rate (default 7, the VGG-9 value; the LSTM used 1e-3).
    sigma0_sq, sigma_sq:
        Prior variance of global units and variance of client units (default 1); scalars or
        per-coordinate ``(D,)`` arrays.
    mu0:
        Prior mean, scalar or ``(D,)`` (default 0; the reference code uses 0.1 for the bias).
    iterations:
        Remove-and-rematch sweeps after the initial pass (default 5).
    seed:
        Seeds the random client order of the sweeps; results are deterministic given it.
    max_width:
        Hard maximum of the global width, default ``min(unit_cap, 2 * max_j L_j)``; must be at
        least ``max_j L_j``. The number of new-unit columns is ``K = min(L_j, max_width - L)``.
    unit_cap:
        Reference-code cap (700) used by the default ``max_width``.
    popularity_weight:
        ``rho`` in front of the popularity term (1 as in the reference code, 2 for exact MAP).
    popularity_cap:
        Cap of the popularity count ``m_i`` (default 10).
    aggregation:
        ``"mean"`` (plain mean over matched clients, default) or ``"posterior"`` (``a / p``).
    """
    if aggregation not in ("mean", "posterior"):
        raise ValueError(f"aggregation must be 'mean' or 'posterior', got {aggregation!r}")
    if gamma0 <= 0:
        raise ValueError("gamma0 must be positive")
    if iterations < 0:
        raise ValueError("iterations must be non-negative")
    clients = [np.asarray(w, dtype=np.float64) for w in weights]
    if not clients:
        raise ValueError("match_layer needs at least one client")
    for j, w in enumerate(clients):
        if w.ndim != 2 or w.shape[0] == 0:
            raise ValueError(f"client {j}: expected a non-empty (L_j, D) array, got {w.shape}")
        if not np.all(np.isfinite(w)):
            raise ValueError(f"client {j}: weights must be finite")
    dim = clients[0].shape[1]
    for j, w in enumerate(clients):
        if w.shape[1] != dim:
            raise ValueError(
                f"input dimension mismatch: client {j} has unit vectors of length "
                f"{w.shape[1]}, client 0 has {dim}"
            )
    n_clients = len(clients)
    widest = max(w.shape[0] for w in clients)
    if max_width is None:
        max_width = max(min(unit_cap, 2 * widest), widest)
    if max_width < widest:
        raise ValueError(f"max_width={max_width} is below the widest client ({widest} units)")

    s0 = 1.0 / _per_coordinate(sigma0_sq, dim, "sigma0_sq")
    s = 1.0 / _per_coordinate(sigma_sq, dim, "sigma_sq")
    mu = _per_coordinate(mu0, dim, "mu0")
    prior = s0 * mu

    a = np.zeros((0, dim))
    p = np.zeros((0, dim))
    m = np.zeros(0, dtype=np.int64)
    assign: list[IntArray | None] = [None] * n_clients

    def add(j: int) -> None:
        nonlocal a, p, m
        w = clients[j]
        n_global = a.shape[0]
        n_new = min(w.shape[0], max_width - n_global)
        scores = bbp_map_scores(
            w, a, p, m, n_clients=n_clients, s0=s0, s=s, mu0=mu, gamma0=gamma0, n_new=n_new,
            popularity_weight=popularity_weight, popularity_cap=popularity_cap,
        )  # fmt: skip
        rows, cols = linear_sum_assignment(-scores)
        target = np.empty(w.shape[0], dtype=np.int64)
        target[rows] = cols
        old = target < n_global
        is_new = ~old
        # New units take indices L, L+1, ... in row order.
        target[is_new] = n_global + np.arange(int(is_new.sum()))
        u = w * s
        a[target[old]] += u[old]
        p[target[old]] += s
        m[target[old]] += 1
        a = np.vstack([a, prior + u[is_new]])
        p = np.vstack([p, np.broadcast_to(s0 + s, (int(is_new.sum()), dim))])
        m = np.concatenate([m, np.ones(int(is_new.sum()), dtype=np.int64)])
        assign[j] = target

    def remove(j: int) -> None:
        nonlocal a, p, m
        target = assign[j]
        assert target is not None
        a[target] -= clients[j] * s
        p[target] -= s
        m[target] -= 1
        assign[j] = None
        keep = m > 0
        if not keep.all():
            new_index = np.cumsum(keep) - 1
            a, p, m = a[keep], p[keep], m[keep]
            for k, other in enumerate(assign):
                if other is not None:
                    assign[k] = new_index[other]

    order = np.argsort([-w.shape[0] for w in clients], kind="stable")
    first = int(order[0])
    a = prior + clients[first] * s
    p = np.tile(s0 + s, (clients[first].shape[0], 1))
    m = np.ones(clients[first].shape[0], dtype=np.int64)
    assign[first] = np.arange(clients[first].shape[0], dtype=np.int64)
    for j in order[1:]:
        add(int(j))
    rng = np.random.default_rng(seed)
    if n_clients > 1:
        for _ in range(iterations):
            for j in rng.permutation(n_clients):
                remove(int(j))
                add(int(j))

    final = [np.asarray(t, dtype=np.int64) for t in assign]
    width = a.shape[0]
    sums = np.zeros((width, dim))
    counts = np.zeros(width, dtype=np.int64)
    for w, t in zip(clients, final, strict=True):
        sums[t] += w
        counts[t] += 1
    mean = sums / counts[:, None]
    posterior = a / p
    return MatchResult(
        global_weights=mean if aggregation == "mean" else posterior,
        assignments=final,
        counts=counts,
        posterior_mean=posterior,
    )
