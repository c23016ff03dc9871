"""Exact pairwise squared Euclidean distances between client updates.

Flower's Gram-matrix shortcut ``|x|^2 + |y|^2 - 2 x.y`` in float32 loses everything when the
vectors are close (models differ by 1e-3 while their norms are ~1e2): it returns negative and
noisy distances. We work on updates (small norms), accumulate in float64, chunk the model
dimension so memory stays bounded for d = 1e6+, and set the diagonal to exactly zero.

The Gram identity's cancellation error is ~1e-16 times the squared norms of the *centred*
rows, so the centre must sit among the updates. The column mean does, unless one update is
huge: 19 honest updates and one of norm 1e38 put the mean 5e36 from all honest ones, and their
mutual distances (~1e-2) drown in noise of ~1e58. When the mean turns out to be far from the
most central update, the distances are recomputed centred on that update (a second pass).
"""

from __future__ import annotations

import torch

# Columns per float64 block: small enough to stay in cache between the copy, the centring
# and the matrix product, large enough that per-block overhead stays small for small n
# (measured on the 2-core reference CPU at n = 15..100, d = 2e5..1e6).
DEFAULT_CHUNK = 0  # 0: about 2**20 elements per block, at least 2**13 columns

# Recentre when the mean is this many times farther (squared) from the most central update
# than that update's median squared distance to the others: the honest distances then carry
# relative noise of about 2**-52 * this ratio, so 2**10 keeps them to ~1e-13.
_RECENTRE_RATIO = 2.0**10


def pairwise_sq_distances(updates: torch.Tensor, chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
    """``D[i, j] = ||x_i - x_j||^2`` in float64, shape (n, n), symmetric, zero diagonal.

    The model dimension is processed in blocks copied into one reused float64 buffer. Each
    block is centred on its column mean (distances do not change, and the Gram identity's
    cancellation error, ~1e-16 |x - centre|^2, then scales with the spread of the updates
    rather than with a component they share), and ``G += B B^T`` accumulates the Gram matrix of
    the centred data. Then ``D = diag(G) + diag(G)^T - 2G``. If the mean lies far outside the
    bulk of the updates (a huge outlier), ``D`` is recomputed with every block centred on the
    most central update (smallest median distance to the others, robust while outliers are
    fewer than half). Works on any device.
    """
    n = updates.shape[0]
    chunk_size = chunk_size or max(2**13, 2**20 // max(n, 1))
    gram = _centred_gram(updates, chunk_size, None)
    distances = _distances_from_gram(gram)
    if n > 2:
        off_diagonal = distances.clone()
        off_diagonal.fill_diagonal_(float("inf"))
        medians = off_diagonal.median(dim=1).values  # over the n - 1 others (lower median)
        central = int(torch.argmin(medians))
        if float(gram[central, central]) > _RECENTRE_RATIO * float(medians[central]):
            distances = _distances_from_gram(_centred_gram(updates, chunk_size, central))
    return distances


def _centred_gram(updates: torch.Tensor, chunk_size: int, centre_row: int | None) -> torch.Tensor:
    """float64 Gram matrix of the rows centred on the column mean (``centre_row`` None) or on
    row ``centre_row``, accumulated block by block."""
    n, d = updates.shape
    gram = torch.zeros((n, n), dtype=torch.float64, device=updates.device)
    buffer = torch.empty((n, min(chunk_size, d)), dtype=torch.float64, device=updates.device)
    for start in range(0, d, chunk_size):
        width = min(chunk_size, d - start)
        block = buffer[:, :width]
        block.copy_(updates[:, start : start + width])
        if centre_row is None:
            block -= block.mean(dim=0, keepdim=True)
        else:
            block -= block[centre_row].clone()
        gram.addmm_(block, block.T)
    return gram


def _distances_from_gram(gram: torch.Tensor) -> torch.Tensor:
    sq = gram.diagonal().clone()
    out = sq[:, None] + sq[None, :] - 2.0 * gram
    out.clamp_(min=0.0)
    out.fill_diagonal_(0.0)
    return (out + out.T) / 2
