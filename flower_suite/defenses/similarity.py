"""Row norms and cosine similarities of client updates, accumulated in float64.

Shared by norm clipping, FLAME and FoolsGold. The model dimension is processed in column
blocks (``aggregation.base.column_chunks``) so no float64 copy of the whole ``(n, d)`` tensor is
made, and every sum of squares / dot product is accumulated in float64: the updates of close
models are small and nearly parallel, where float32 Gram products lose the digits that matter.
"""

from __future__ import annotations

import torch

from flower_suite.aggregation.base import column_chunks


def row_norms(updates: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``||x_i||_2`` for every row, accumulated in float64, shape ``(n,)``.

    ``mask`` (optional boolean ``(d,)``) restricts the norm to the selected columns.
    """
    n, d = updates.shape
    sq = torch.zeros(n, dtype=torch.float64, device=updates.device)
    for cols in column_chunks(n, d):
        block = updates[:, cols].to(torch.float64)
        if mask is not None:
            block = block[:, mask[cols].to(updates.device)]
        sq += (block * block).sum(dim=1)
    return sq.sqrt()


def cosine_similarity(updates: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``C[i, j] = <x_i, x_j> / (||x_i|| ||x_j||)`` in float64, shape ``(n, n)``.

    The Gram matrix ``G = X X^T`` is accumulated block by block in float64, then normalised by
    the row norms (its diagonal). Values are clamped to ``[-1, 1]`` (rounding), the matrix is
    exactly symmetric and its diagonal exactly 1. A zero row has no direction: its similarity
    to every *other* row is defined as 0 (orthogonal), so it is neither grouped with nor
    pardoned by anyone.

    ``mask`` (optional boolean ``(d,)``) restricts the vectors to the selected columns.
    """
    n, d = updates.shape
    gram = torch.zeros((n, n), dtype=torch.float64, device=updates.device)
    for cols in column_chunks(n, d):
        block = updates[:, cols].to(torch.float64)
        if mask is not None:
            block = block[:, mask[cols].to(updates.device)]
        gram.addmm_(block, block.T)
    norms = gram.diagonal().clamp(min=0.0).sqrt()
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    out = gram / safe[:, None] / safe[None, :]
    out = (out + out.T) / 2  # addmm's blocked sums can differ in the last bit across the diagonal
    zero = norms == 0
    out[zero, :] = 0.0
    out[:, zero] = 0.0
    out.clamp_(-1.0, 1.0)
    out.fill_diagonal_(1.0)
    return out
