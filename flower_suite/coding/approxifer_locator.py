"""ApproxIFER's error locator for up to ``E`` Byzantine workers (AAAI 2022, Section 4.2; spec §5-6).

For every output coordinate ``c`` the returned values ``y_i = Ỹ_i[c]`` at the points ``β_i``
(``i ∈ R``) are fitted by a rational function ``P/Q`` with ``deg P, deg Q ≤ m - 1``,
``m = K + E``: one linear equation ``P(β_i) - y_i·Q(β_i) = 0`` per returned point, normalised
by ``Q(0) = 1`` (the authors' choice), i.e. ``P(β_i) - y_i·(Q(β_i) - 1) = y_i`` with ``2m - 1``
unknowns, solved by SVD least squares (float64; never the normal equations). A corrupted
position is an approximate root of ``Q``'s error-locator factor, so the ``E`` smallest
``|Q(β_i)|`` are that coordinate's suspects. Votes over the coordinates flag the ``E`` most
suspected workers (ties: smaller summed rank of ``|Q|``); decoding then uses the rest.

Bases: ``"chebyshev"`` (default; ``Q(z) = 1 + Σ_{d≥1} q_d (T_d(z) - T_d(0))``, condition number
about 2) or ``"monomial"`` (the authors' reference mode; ill-conditioned beyond ``K ≈ 20``).

Result counts (spec §5): ``E = 0`` needs ``K`` results; ``E > 0`` needs ``2(K+E) - 1``, the
number of unknowns; the default pool is ``N = 2(K+E) + S - 1`` workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.polynomial import chebyshev

from flower_suite.coding.berrut import (
    TooFewResultsError,
    berrut_decode,
    chebyshev_second_kind,
    check_batch_size,
    check_num_workers,
    check_returned,
)

LocatorBasis = Literal["chebyshev", "monomial"]
LOCATOR_BASES: tuple[str, ...] = ("chebyshev", "monomial")


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, not {value!r}")


def required_results(num_queries: int, max_byzantine: int) -> int:
    """Fewest results decoding accepts: ``K`` (``E = 0``) or ``2(K+E) - 1`` (``E > 0``)."""
    check_batch_size(num_queries)
    _check_count("E (max_byzantine)", max_byzantine)
    return num_queries if max_byzantine == 0 else 2 * (num_queries + max_byzantine) - 1


def default_num_workers(num_queries: int, max_stragglers: int = 0, max_byzantine: int = 0) -> int:
    """``N = K + S`` (``E = 0``, the paper's setting) or ``2(K+E) + S - 1`` (spec §5)."""
    _check_count("S (max_stragglers)", max_stragglers)
    return required_results(num_queries, max_byzantine) + max_stragglers


def check_code_sizes(
    num_queries: int, num_workers: int, max_stragglers: int = 0, max_byzantine: int = 0
) -> None:
    """``K``, ``N``, ``S``, ``E`` consistent: ``N ≥ required_results(K, E) + S`` or ValueError."""
    check_num_workers(num_queries, num_workers)
    _check_count("S (max_stragglers)", max_stragglers)
    needed = default_num_workers(num_queries, max_stragglers, max_byzantine)
    if num_workers < needed:
        raise ValueError(
            f"N={num_workers} workers cannot tolerate S={max_stragglers} stragglers and "
            f"E={max_byzantine} Byzantine workers at K={num_queries}: need N >= {needed}"
        )


@dataclass(frozen=True)
class LocatorResult:
    """The workers flagged as Byzantine, and per returned worker its suspect votes."""

    flagged: tuple[int, ...]
    returned: tuple[int, ...]  # sorted worker ids, aligned with ``votes``
    votes: np.ndarray  # (|R|,) number of coordinates that suspected each worker


def _design(beta: np.ndarray, degree: int, basis: str) -> tuple[np.ndarray, np.ndarray]:
    """Basis values at ``beta`` for ``P`` (``m`` columns) and for ``Q - 1`` (``m - 1`` columns)."""
    if basis == "monomial":
        vander = np.vander(beta, degree + 1, increasing=True)
        return vander, vander[:, 1:]
    vander = chebyshev.chebvander(beta, degree)
    at_zero = chebyshev.chebvander(np.zeros(1), degree)[0]
    return vander, vander[:, 1:] - at_zero[None, 1:]


def locator_magnitudes(
    values: np.ndarray, beta: np.ndarray, num_queries: int, max_byzantine: int, basis: str
) -> np.ndarray:
    """``|Q(β_i)|`` per coordinate: shape ``(|R|, C)`` for ``values`` of shape ``(|R|, C)``."""
    m = num_queries + max_byzantine
    p_cols, q_cols = _design(beta, m - 1, basis)
    # min ||P a + G_c b - y_c|| over (a, b), G_c = -y_c (Q - 1 columns): for the best ``a`` the
    # residual is the part orthogonal to P's columns, so ``b`` (all that |Q| needs) solves the
    # smaller problem projected on the orthogonal complement U⊥ of P's column space (SVD),
    # one system per coordinate, all solved by one batched SVD pseudo-inverse.
    u, sv, _ = np.linalg.svd(p_cols, full_matrices=True)
    rank = int((sv > sv[0] * max(p_cols.shape) * np.finfo(np.float64).eps).sum())
    complement = u[:, rank:]  # (|R|, |R| - rank)
    y = values.T  # (C, |R|)
    systems = np.einsum("rk,cr,rd->ckd", complement, -y, q_cols)
    rhs = y @ complement  # (C, |R| - rank)
    coef = np.einsum("cdk,ck->cd", np.linalg.pinv(systems), rhs)
    return np.abs(1.0 + coef @ q_cols.T).T


def locate_byzantine(
    results: np.ndarray,
    returned: Sequence[int],
    num_queries: int,
    num_workers: int,
    max_byzantine: int,
    points: str = "cheb2_N",
    basis: str = "chebyshev",
) -> LocatorResult:
    """Flag the ``E`` workers among ``returned`` whose results look corrupted (spec §6).

    ``results`` has one row per returned worker (row-aligned with ``returned``, any order),
    flattened to ``C`` coordinates. ``E = 0`` bypasses the locator (nothing flagged).
    """
    if basis not in LOCATOR_BASES:
        raise ValueError(f"basis must be one of {LOCATOR_BASES}, not {basis!r}")
    check_num_workers(num_queries, num_workers)
    chosen = check_returned(returned, num_workers)
    values = np.asarray(results, dtype=np.float64)
    if values.ndim < 1 or values.shape[0] != len(chosen):
        raise ValueError(f"results must have one row per returned worker ({len(chosen)})")
    if not np.all(np.isfinite(values)):
        raise ValueError("results contain NaN or inf")
    needed = required_results(num_queries, max_byzantine)
    if len(chosen) < needed:
        raise TooFewResultsError(
            f"locating E={max_byzantine} Byzantine workers at K={num_queries} needs at least "
            f"{needed} results, got {len(chosen)}"
        )
    order = np.argsort(np.asarray(list(returned), dtype=np.int64), kind="stable")
    values = values[order].reshape(len(chosen), -1)
    if max_byzantine == 0:
        return LocatorResult((), chosen, np.zeros(len(chosen), dtype=np.int64))
    beta = chebyshev_second_kind(num_workers, points)[list(chosen)]
    magnitudes = locator_magnitudes(values, beta, num_queries, max_byzantine, basis)
    ranks = np.argsort(np.argsort(magnitudes, axis=0, kind="stable"), axis=0, kind="stable")
    votes = (ranks < max_byzantine).sum(axis=1)
    # Most votes first; ties by the smaller summed rank of |Q| (spec §6, step 2).
    pick = np.lexsort((ranks.sum(axis=1), -votes))[:max_byzantine]
    flagged = tuple(sorted(chosen[i] for i in pick))
    return LocatorResult(flagged, chosen, votes)


@dataclass(frozen=True)
class RobustDecoding:
    """Decoded outputs ``Ŷ`` (``(K, *output_shape)``), flagged workers and the locator's votes."""

    outputs: np.ndarray
    flagged: tuple[int, ...]
    used: tuple[int, ...]
    locator: LocatorResult


def robust_decode(
    results: np.ndarray,
    returned: Sequence[int],
    num_queries: int,
    num_workers: int,
    max_byzantine: int,
    points: str = "cheb2_N",
    basis: str = "chebyshev",
) -> RobustDecoding:
    """Locate up to ``E`` Byzantine workers, drop them, Berrut-decode the rest (spec §6, step 3)."""
    values = np.asarray(results, dtype=np.float64)
    located = locate_byzantine(
        values, returned, num_queries, num_workers, max_byzantine, points, basis
    )
    keep = [k for k, i in enumerate(returned) if int(i) not in located.flagged]
    used = [int(returned[k]) for k in keep]
    outputs = berrut_decode(values[keep], used, num_queries, num_workers, points)
    return RobustDecoding(outputs, located.flagged, tuple(sorted(used)), located)
