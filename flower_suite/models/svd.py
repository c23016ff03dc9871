"""The PUFFERFISH rank rule and the truncated-SVD split of one weight (spec pufferfish.md).

A weight of unrolled shape ``a x b`` gets rank ``r = max(1, floor(rho * min(a, b)))``
(:func:`rank_for`); :func:`svd_factors` splits it into ``left @ right`` with ``S^{1/2}`` on both
sides, so the factorized layers of :mod:`~flower_suite.models.lowrank` and
:mod:`~flower_suite.models.lowrank_lstm` start from the best rank-``r`` approximation.
"""

from __future__ import annotations

import math

import torch

__all__ = ["check_rank_ratio", "rank_for", "svd_factors"]

_RANK_EPS = 1e-9


def check_rank_ratio(rank_ratio: float) -> None:
    ok = isinstance(rank_ratio, int | float) and not isinstance(rank_ratio, bool)
    if not (ok and 0.0 < rank_ratio <= 1.0):
        raise ValueError(f"rank_ratio must lie in (0, 1], got {rank_ratio!r}")


def rank_for(a: int, b: int, rank_ratio: float) -> int:
    """Rank of an ``a x b`` (unrolled) weight: ``max(1, floor(rank_ratio * min(a, b)))``.

    A tiny epsilon guards against float round-off (``0.29 * 100`` is 28.999...).

    >>> rank_for(576, 64, 0.25), rank_for(4608, 512, 0.25), rank_for(1500, 1500, 0.25)
    (16, 128, 375)
    """
    check_rank_ratio(rank_ratio)
    if a < 1 or b < 1:
        raise ValueError(f"weight dimensions must be positive, got {a} x {b}")
    return max(1, math.floor(rank_ratio * min(a, b) + _RANK_EPS))


def _thin_svd(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD through a QR of the long side first (LAPACK's rectangular SVD is far slower)."""
    rows, cols = m.shape
    if rows > cols:
        q, r = torch.linalg.qr(m)
        p, s, qt = torch.linalg.svd(r)
        return q @ p, s, qt
    if cols > rows:
        q, r = torch.linalg.qr(m.T)
        p, s, qt = torch.linalg.svd(r.T)
        return p, s, qt @ q.T
    return torch.linalg.svd(m)


def svd_factors(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-``rank`` split ``matrix ≈ left @ right`` with the S^{1/2} on both sides.

    ``matrix`` is ``(rows, cols)``; returns ``left = P_r S_r^{1/2}`` ``(rows, rank)`` and
    ``right = S_r^{1/2} Q_rᵀ`` ``(rank, cols)``. The SVD runs in float64 and the factors come
    back in ``matrix``'s dtype. On the meta device only the shapes are produced.
    """
    rows, cols = matrix.shape
    if not 1 <= rank <= min(rows, cols):
        raise ValueError(f"rank must lie in [1, {min(rows, cols)}], got {rank}")
    if matrix.is_meta:
        return matrix.new_empty(rows, rank), matrix.new_empty(rank, cols)
    p, s, qt = _thin_svd(matrix.detach().to(torch.float64))
    root = s[:rank].sqrt()
    left = p[:, :rank] * root
    right = root[:, None] * qt[:rank]
    return left.to(matrix.dtype), right.to(matrix.dtype)
