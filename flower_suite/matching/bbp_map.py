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


@dataclass(frozen=True)
class _MatchModel:
    """Everything the per-client steps share: the per-coordinate precisions ``s0 = 1/sigma0_sq``
    and ``s = 1/sigma_sq``, the prior mean ``mu0`` (and its natural form ``s0 * mu0``), and the
    scoring options of :func:`bbp_map_scores`."""

    s0: FloatArray
    s: FloatArray
    mu: FloatArray
    prior: FloatArray
    gamma0: float
    n_clients: int
    max_width: int
    popularity_weight: float
    popularity_cap: int


@dataclass(frozen=True)
class _MatchState:
    """Global units in natural parameters (``a`` mean, ``p`` precision, ``m`` popularity, one
    row per unit) and every client's assignment (``None`` while it is taken out for a sweep).

    The steps below return a new state instead of mutating one, so each sweep step reads as
    ``state = step(state, ...)``.
    """

    a: FloatArray
    p: FloatArray
    m: IntArray
    assignments: tuple[IntArray | None, ...]


def _check_options(aggregation: str, gamma0: float, iterations: int) -> None:
    if aggregation not in ("mean", "posterior"):
        raise ValueError(f"aggregation must be 'mean' or 'posterior', got {aggregation!r}")
    if gamma0 <= 0:
        raise ValueError("gamma0 must be positive")
    if iterations < 0:
        raise ValueError("iterations must be non-negative")


def _validated_clients(weights: Sequence[ArrayLike]) -> list[FloatArray]:
    """The clients' unit vectors as float64 ``(L_j, D)`` arrays, all non-empty, finite and of
    one input dimension ``D``."""
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
    return clients


def _resolve_max_width(max_width: int | None, unit_cap: int, widest: int) -> int:
    """The hard maximum of the global width (spec section 8): never below the widest client,
    which must always fit."""
    if max_width is None:
        max_width = max(min(unit_cap, 2 * widest), widest)
    if max_width < widest:
        raise ValueError(f"max_width={max_width} is below the widest client ({widest} units)")
    return max_width


def _match_model(
    dim: int,
    *,
    sigma0_sq: ArrayLike,
    sigma_sq: ArrayLike,
    mu0: ArrayLike,
    gamma0: float,
    n_clients: int,
    max_width: int,
    popularity_weight: float,
    popularity_cap: int,
) -> _MatchModel:
    """The shared settings, with the variances turned into per-coordinate precisions."""
    s0 = 1.0 / _per_coordinate(sigma0_sq, dim, "sigma0_sq")
    s = 1.0 / _per_coordinate(sigma_sq, dim, "sigma_sq")
    mu = _per_coordinate(mu0, dim, "mu0")
    return _MatchModel(
        s0=s0, s=s, mu=mu, prior=s0 * mu, gamma0=gamma0, n_clients=n_clients,
        max_width=max_width, popularity_weight=popularity_weight, popularity_cap=popularity_cap,
    )  # fmt: skip


def _initial_state(clients: Sequence[FloatArray], first: int, model: _MatchModel) -> _MatchState:
    """Every unit of client ``first`` (the widest) becomes its own global unit."""
    w = clients[first]
    assignments: list[IntArray | None] = [None] * len(clients)
    assignments[first] = np.arange(w.shape[0], dtype=np.int64)
    return _MatchState(
        a=model.prior + w * model.s,
        p=np.tile(model.s0 + model.s, (w.shape[0], 1)),
        m=np.ones(w.shape[0], dtype=np.int64),
        assignments=tuple(assignments),
    )


def _best_targets(state: _MatchState, w: FloatArray, model: _MatchModel) -> IntArray:
    """Global index of each of the client's units under the Hungarian assignment maximising the
    BBP-MAP score; units given a new-unit column get ``L, L+1, ...`` in row order."""
    n_global = state.a.shape[0]
    n_new = min(w.shape[0], model.max_width - n_global)
    scores = bbp_map_scores(
        w, state.a, state.p, state.m, n_clients=model.n_clients, s0=model.s0, s=model.s,
        mu0=model.mu, gamma0=model.gamma0, n_new=n_new,
        popularity_weight=model.popularity_weight, popularity_cap=model.popularity_cap,
    )  # fmt: skip
    # Imported here: SciPy's optimize package costs ~0.8 s of every command's start-up (the
    # strategies import FedMA), and only FedMA's matching needs it.
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(-scores)
    target = np.empty(w.shape[0], dtype=np.int64)
    target[rows] = cols
    is_new = target >= n_global
    target[is_new] = n_global + np.arange(int(is_new.sum()))
    return target


def _add_client(
    state: _MatchState, clients: Sequence[FloatArray], j: int, model: _MatchModel
) -> _MatchState:
    """Match client ``j`` to the current global units and add its units to their posteriors."""
    w = clients[j]
    target = _best_targets(state, w, model)
    old = target < state.a.shape[0]
    is_new = ~old
    n_new = int(is_new.sum())
    u = w * model.s
    # New units are appended first (fresh arrays, so the caller's state stays untouched); the
    # matched ones all have indices below the old width, so they update the copied old rows.
    a = np.vstack([state.a, model.prior + u[is_new]])
    p = np.vstack([state.p, np.broadcast_to(model.s0 + model.s, (n_new, a.shape[1]))])
    m = np.concatenate([state.m, np.ones(n_new, dtype=np.int64)])
    a[target[old]] += u[old]
    p[target[old]] += model.s
    m[target[old]] += 1
    assignments = list(state.assignments)
    assignments[j] = target
    return _MatchState(a=a, p=p, m=m, assignments=tuple(assignments))


def _remove_client(
    state: _MatchState, clients: Sequence[FloatArray], j: int, model: _MatchModel
) -> _MatchState:
    """Take client ``j``'s units out of the posteriors; global units nobody holds any more are
    deleted and the other clients' assignments renumbered."""
    target = state.assignments[j]
    if target is None:
        raise RuntimeError(f"match_layer: client {j} is not matched, so it cannot be removed")
    a, p, m = state.a.copy(), state.p.copy(), state.m.copy()
    a[target] -= clients[j] * model.s
    p[target] -= model.s
    m[target] -= 1
    assignments: list[IntArray | None] = list(state.assignments)
    assignments[j] = None
    keep = m > 0
    if not keep.all():
        new_index = np.cumsum(keep) - 1
        a, p, m = a[keep], p[keep], m[keep]
        assignments = [None if t is None else new_index[t] for t in assignments]
    return _MatchState(a=a, p=p, m=m, assignments=tuple(assignments))


def _final_assignments(state: _MatchState) -> list[IntArray]:
    final = []
    for j, target in enumerate(state.assignments):
        if target is None:  # every sweep re-adds the client it removed
            raise RuntimeError(f"match_layer: client {j} ended up unmatched")
        final.append(np.asarray(target, dtype=np.int64))
    return final


def _matched_mean(
    clients: Sequence[FloatArray], assignments: Sequence[IntArray], width: int
) -> tuple[FloatArray, IntArray]:
    """Plain mean of the client units matched to each global unit, and how many there are."""
    sums = np.zeros((width, clients[0].shape[1]))
    counts = np.zeros(width, dtype=np.int64)
    for w, t in zip(clients, assignments, strict=True):
        sums[t] += w
        counts[t] += 1
    return sums / counts[:, None], counts


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

    FedMA, dissertation chapter 5: the widest client seeds the global units, every other client
    is matched in turn (:func:`bbp_map_scores` + Hungarian), then ``iterations`` sweeps remove
    and re-match each client in a random order.

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
    _check_options(aggregation, gamma0, iterations)
    clients = _validated_clients(weights)
    n_clients = len(clients)
    width_limit = _resolve_max_width(max_width, unit_cap, max(w.shape[0] for w in clients))
    model = _match_model(
        clients[0].shape[1], sigma0_sq=sigma0_sq, sigma_sq=sigma_sq, mu0=mu0, gamma0=gamma0,
        n_clients=n_clients, max_width=width_limit, popularity_weight=popularity_weight,
        popularity_cap=popularity_cap,
    )  # fmt: skip

    order = np.argsort([-w.shape[0] for w in clients], kind="stable")
    state = _initial_state(clients, int(order[0]), model)
    for j in order[1:]:
        state = _add_client(state, clients, int(j), model)
    rng = np.random.default_rng(seed)
    if n_clients > 1:
        for _ in range(iterations):
            for j in rng.permutation(n_clients):
                state = _remove_client(state, clients, int(j), model)
                state = _add_client(state, clients, int(j), model)

    final = _final_assignments(state)
    mean, counts = _matched_mean(clients, final, state.a.shape[0])
    posterior = state.a / state.p
    return MatchResult(
        global_weights=mean if aggregation == "mean" else posterior,
        assignments=final,
        counts=counts,
        posterior_mean=posterior,
    )
