"""Exact pairwise squared Euclidean distances between client updates.

Flower's Gram-matrix shortcut ``|x|^2 + |y|^2 - 2 x.y`` in float32 loses everything when the
vectors are close (models differ by 1e-3 while their norms are ~1e2): it returns negative and
noisy distances. We work on updates (small norms), accumulate in float64, chunk the model
dimension so memory stays bounded for d = 1e6+, and set the diagonal to exactly zero.
"""

from __future__ import annotations

import torch

# float64 working set per chunk: n x chunk values (n = 100, chunk = 2**18 -> 200 MB at most).
DEFAULT_CHUNK = 2**18


def pairwise_sq_distances(updates: torch.Tensor, chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
    """``D[i, j] = ||x_i - x_j||^2`` in float64, shape (n, n), symmetric, zero diagonal.

    One matrix product per chunk of columns: D = sum_chunks (|a|^2 + |b|^2 - 2 a.b) on float64
    copies of each chunk. Each chunk is first centred on its column mean: distances do not
    change, and the identity's cancellation error (~1e-16 |a|^2) then scales with the spread of
    the updates rather than with a common component they share. Works on any device.
    """
    n, d = updates.shape
    out = torch.zeros((n, n), dtype=torch.float64, device=updates.device)
    for start in range(0, d, chunk_size):
        block = updates[:, start : start + chunk_size].to(torch.float64)
        block = block - block.mean(dim=0, keepdim=True)
        sq = (block * block).sum(dim=1)
        out += sq[:, None] + sq[None, :] - 2.0 * (block @ block.T)
    out.clamp_(min=0.0)
    out.fill_diagonal_(0.0)
    return (out + out.T) / 2
