"""Berrut rational coding for approximate coded computing (ApproxIFER, AAAI 2022, Section 4).

The ``K`` queries of a batch are interpolated at the Chebyshev points of the first kind
``α_j = cos((2j+1)π/(2K))`` with Berrut's rational basis (BACC, Jahani-Nezhad and Maddah-Ali,
TPAMI 2022)::

    l_j(z) = [(-1)^j / (z - α_j)] / Σ_k (-1)^k / (z - α_k)

and the encoder ``u(z) = Σ_j X_j l_j(z)`` is evaluated at the workers' Chebyshev points of the
second kind ``β_i = cos(iπ/N)`` (``"cheb2_N"``, the paper's and the authors' choice) or
``cos(iπ/(N-1))`` (``"cheb2_lobatto"``, BACC's form). In matrix form (spec §2) the coded queries
are ``X̃ = A·X`` with ``A[i, j] = l_j(β_i)``.

The decoder (spec §4) interpolates the returned predictions ``Ỹ_i``, ``i ∈ F`` (sorted),
with the same basis over the nodes ``β_F`` and evaluates it at ``α``: ``Ŷ = B·Ỹ_F``. The sign
of each term alternates with the *rank* ``m`` inside ``F`` (Berrut's no-pole guarantee needs
alternation over consecutive sorted nodes), not with the worker index.

Every row of ``A`` and ``B`` sums to 1, so constants are reproduced and coding commutes with
per-coordinate affine maps. When an evaluation point coincides with a node (``β_i = α_j``
happens for some even ``N``, e.g. ``K = 12, N = 32``) the row is the unit vector ``e_j``,
Berrut's limit there, never ``0/0``.

Example
-------
>>> import numpy as np
>>> a = encoding_matrix(8, 9)
>>> bool(np.allclose(a.sum(axis=1), 1.0))
True
>>> b = decoding_matrix(8, 9, returned=range(1, 9))
>>> b.shape
(8, 8)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Literal

import numpy as np

PointKind = Literal["cheb2_N", "cheb2_lobatto"]
POINT_KINDS: tuple[str, ...] = ("cheb2_N", "cheb2_lobatto")
MAX_QUERIES = 256  # K: beyond this Berrut's 1/N accuracy needs thousands of workers
MAX_WORKERS = 4096  # N
# |z - node| below this (points lie in [-1, 1]) is a coincidence: the row is e_j, not 0/0.
COINCIDENCE_TOLERANCE = 1e-13


class TooFewResultsError(ValueError):
    """Fewer results than decoding needs (``K`` without, ``2(K+E)-1`` with Byzantine workers)."""


def check_batch_size(num_queries: int) -> None:
    """``K`` must be an integer in ``[1, MAX_QUERIES]``."""
    if isinstance(num_queries, bool) or not isinstance(num_queries, int | np.integer):
        raise ValueError(f"K (num_queries) must be an integer, not {num_queries!r}")
    if not 1 <= num_queries <= MAX_QUERIES:
        raise ValueError(f"K (num_queries) must be in [1, {MAX_QUERIES}], not {num_queries}")


def check_num_workers(num_queries: int, num_workers: int) -> None:
    """``N`` must be an integer in ``[K, MAX_WORKERS]``."""
    check_batch_size(num_queries)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int | np.integer):
        raise ValueError(f"N (num_workers) must be an integer, not {num_workers!r}")
    if not num_queries <= num_workers <= MAX_WORKERS:
        raise ValueError(
            f"N (num_workers) must be in [K={num_queries}, {MAX_WORKERS}], not {num_workers}"
        )


def chebyshev_first_kind(num_queries: int) -> np.ndarray:
    """Interpolation nodes ``α_j = cos((2j+1)π/(2K))``, ``j = 0..K-1`` (spec §2)."""
    check_batch_size(num_queries)
    j = np.arange(num_queries, dtype=np.float64)
    return np.cos((2.0 * j + 1.0) * np.pi / (2.0 * num_queries))


def chebyshev_second_kind(num_workers: int, points: str = "cheb2_N") -> np.ndarray:
    """Worker points ``β_i = cos(iπ/N)`` (``"cheb2_N"``) or ``cos(iπ/(N-1))`` (Lobatto)."""
    if points not in POINT_KINDS:
        raise ValueError(f"points must be one of {POINT_KINDS}, not {points!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int | np.integer):
        raise ValueError(f"N (num_workers) must be an integer, not {num_workers!r}")
    if not 1 <= num_workers <= MAX_WORKERS:
        raise ValueError(f"N (num_workers) must be in [1, {MAX_WORKERS}], not {num_workers}")
    i = np.arange(num_workers, dtype=np.float64)
    if points == "cheb2_N":
        return np.cos(i * np.pi / num_workers)
    if num_workers < 2:
        raise ValueError("points='cheb2_lobatto' needs N >= 2 (both endpoints)")
    return np.cos(i * np.pi / (num_workers - 1))


def berrut_basis(nodes: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Matrix ``M[t, m] = l_m(targets[t])`` of Berrut's basis over ``nodes`` (in order).

    The sign of node ``m`` is ``(-1)^m``, its rank in ``nodes``: pass the nodes sorted (the
    worker points of a sorted index set are monotone). A target within
    :data:`COINCIDENCE_TOLERANCE` of a node gets the unit row of that node.
    """
    nodes = np.asarray(nodes, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if nodes.ndim != 1 or targets.ndim != 1 or nodes.size == 0:
        raise ValueError("nodes and targets must be non-empty 1-D arrays")
    if not (np.all(np.isfinite(nodes)) and np.all(np.isfinite(targets))):
        raise ValueError("nodes and targets must be finite")
    if np.unique(nodes).size != nodes.size:
        raise ValueError("nodes must be distinct")
    diff = targets[:, None] - nodes[None, :]
    hit = np.abs(diff) <= COINCIDENCE_TOLERANCE
    signs = np.where(np.arange(nodes.size) % 2 == 0, 1.0, -1.0)
    terms = signs[None, :] / np.where(hit, 1.0, diff)
    for t in np.flatnonzero(hit.any(axis=1)):  # Berrut's limit at a node: the unit row
        terms[t] = 0.0
        terms[t, np.argmax(hit[t])] = 1.0
    return terms / terms.sum(axis=1, keepdims=True)


@lru_cache(maxsize=256)
def _encoding_matrix(num_queries: int, num_workers: int, points: str) -> np.ndarray:
    alpha = chebyshev_first_kind(num_queries)
    beta = chebyshev_second_kind(num_workers, points)
    matrix = berrut_basis(alpha, beta)
    matrix.setflags(write=False)
    return matrix


def encoding_matrix(num_queries: int, num_workers: int, points: str = "cheb2_N") -> np.ndarray:
    """``A ∈ R^{N×K}``, ``A[i, j] = l_j(β_i)`` in float64 (read-only, cached per ``(K, N)``)."""
    check_num_workers(num_queries, num_workers)
    return _encoding_matrix(int(num_queries), int(num_workers), points)


def check_returned(returned: Iterable[int], num_workers: int) -> tuple[int, ...]:
    """The returned worker indices as a sorted tuple; distinct and in ``[0, N)`` or a ValueError."""
    indices = [int(i) for i in returned]
    if len(set(indices)) != len(indices):
        raise ValueError(f"returned worker indices must be distinct, got {indices}")
    bad = [i for i in indices if not 0 <= i < num_workers]
    if bad:
        raise ValueError(f"returned worker indices {bad} are outside [0, N={num_workers})")
    return tuple(sorted(indices))


@lru_cache(maxsize=1024)
def _decoding_matrix(
    num_queries: int, num_workers: int, returned: tuple[int, ...], points: str
) -> np.ndarray:
    beta = chebyshev_second_kind(num_workers, points)[list(returned)]
    matrix = berrut_basis(beta, chebyshev_first_kind(num_queries))
    matrix.setflags(write=False)
    return matrix


def decoding_matrix(
    num_queries: int,
    num_workers: int,
    returned: Iterable[int],
    points: str = "cheb2_N",
    min_results: int | None = None,
) -> np.ndarray:
    """``B ∈ R^{K×|F|}`` over the sorted returned set ``F`` (signs by rank; cached per F).

    Refuses (:class:`TooFewResultsError`) fewer than ``min_results`` results, ``K`` by default
    (spec §5): with fewer, Berrut's interpolant is too coarse to be worth returning.
    """
    check_num_workers(num_queries, num_workers)
    chosen = check_returned(returned, num_workers)
    needed = num_queries if min_results is None else min_results
    if len(chosen) < max(needed, 1):
        raise TooFewResultsError(
            f"decoding needs at least {max(needed, 1)} results, got {len(chosen)}"
        )
    return _decoding_matrix(int(num_queries), int(num_workers), chosen, points)


def _check_finite(name: str, values: np.ndarray) -> None:
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} contain NaN or inf")


def berrut_encode(queries: np.ndarray, num_workers: int, points: str = "cheb2_N") -> np.ndarray:
    """Coded queries ``X̃ = A·X`` (float64, shape ``(N, *query_shape)``) for ``K = len(queries)``."""
    queries = np.asarray(queries, dtype=np.float64)
    if queries.ndim < 1:
        raise ValueError("queries must have a leading batch axis of length K")
    _check_finite("queries", queries)
    matrix = encoding_matrix(queries.shape[0], num_workers, points)
    flat = queries.reshape(queries.shape[0], -1)
    return (matrix @ flat).reshape((num_workers, *queries.shape[1:]))


def berrut_decode(
    results: np.ndarray,
    returned: Sequence[int],
    num_queries: int,
    num_workers: int,
    points: str = "cheb2_N",
    min_results: int | None = None,
) -> np.ndarray:
    """``Ŷ = B·Ỹ_F ≈ f(X)`` from the results of the workers ``returned`` (rows aligned)."""
    results = np.asarray(results, dtype=np.float64)
    order = np.argsort(np.asarray(list(returned), dtype=np.int64), kind="stable")
    if results.ndim < 1 or results.shape[0] != order.size:
        raise ValueError(
            f"results must have one row per returned worker ({order.size}), "
            f"got shape {results.shape}"
        )
    _check_finite("results", results)
    matrix = decoding_matrix(num_queries, num_workers, returned, points, min_results)
    flat = results[order].reshape(order.size, -1)
    return (matrix @ flat).reshape((num_queries, *results.shape[1:]))
