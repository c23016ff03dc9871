"""Coordinate-wise median and trimmed mean (Yin et al., ICML 2018).

Spec ``robust-aggregation.md`` sections 3.4-3.5. Both are unweighted, as in Yin et al. and in
Flower's FedMedian / FedTrimmedAvg: ``weights`` are validated and then ignored.

Kernels: the model dimension is processed in column blocks of about ``2**20`` entries, so memory
stays bounded and each block stays in cache. Order statistics come from ``torch.topk`` along the
client axis (unsorted), which measured faster than ``torch.sort``, ``torch.kthvalue`` and numpy's
``np.median`` / ``np.partition`` at ``n = 50, d = 1e6``. Traps avoided: ``torch.median`` returns
the *lower* middle value for even ``n`` (we average the two middle values, numpy semantics) and
``torch.quantile`` refuses inputs above ``2**24`` elements.
"""

from __future__ import annotations

import math

import torch

from flower_suite.aggregation.base import AggregationResult, check_updates, column_chunks


def column_median_f64(block: torch.Tensor) -> torch.Tensor:
    """True median of each column of an ``(n, c)`` block, as float64 ``(c,)``.

    Odd ``n``: the middle order statistic. Even ``n``: the mean of the two middle ones.
    """
    n = block.shape[0]
    smallest = torch.topk(block, n // 2 + 1, dim=0, largest=False, sorted=False).values
    if n % 2 == 1:
        return smallest.amax(dim=0).to(torch.float64)
    middle = torch.topk(smallest, 2, dim=0, largest=True, sorted=False).values.to(torch.float64)
    return (middle[0] + middle[1]) / 2


def weighted_column_median_f64(block: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted median of each column of an ``(n, c)`` block, as float64 ``(c,)``.

    A minimiser of ``sum_i w_i |x_i - m|`` per column (``weights``: ``(n,)``, non-negative, not
    all zero). With the column sorted and ``W`` the total weight, it is the first value whose
    cumulative weight reaches ``W / 2``; when that cumulative weight is exactly ``W / 2`` every
    point up to the next positive-weight value minimises, and the midpoint is returned, so equal
    weights give the numpy median (mean of the two middle values for even ``n``). Pass raw
    example counts: integer cumulative sums are exact, so the tie test is too (weights whose
    sum would overflow are scaled by a power of two, which keeps them exact).
    """
    w = weights.to(device=block.device, dtype=torch.float64)
    if not math.isfinite(2 * float(w.sum())):
        w = w * 2.0 ** -math.frexp(float(w.max()))[1]  # max below 1: the sum is at most n
    ordered, order = torch.sort(block, dim=0)
    twice_cumulative = 2 * torch.cumsum(w[order], dim=0)
    total = twice_cumulative[-1:] / 2
    lower = (twice_cumulative < total).sum(dim=0, keepdim=True)  # first reaching W / 2
    upper = (twice_cumulative <= total).sum(dim=0, keepdim=True).clamp(max=block.shape[0] - 1)
    low = ordered.gather(0, lower).to(torch.float64)
    high = ordered.gather(0, upper).to(torch.float64)
    tie = twice_cumulative.gather(0, lower) == total
    return torch.where(tie, low / 2 + high / 2, low).squeeze(0)


def coordinate_median(
    updates: torch.Tensor, weights: torch.Tensor | None = None
) -> AggregationResult:
    """Coordinate-wise median.

    Parameters
    ----------
    updates : torch.Tensor
        ``(n, d)`` floating-point tensor, one flattened update per row.
    weights : torch.Tensor, optional
        Validated, then ignored (unweighted median, as in Yin et al. and Flower's FedMedian).

    Returns
    -------
    AggregationResult
        Per-coordinate median in the input dtype; for even ``n`` the average of the two middle
        values. ``selected`` is empty.

    Examples
    --------
    >>> coordinate_median(torch.tensor([[1.0], [2.0], [3.0], [10.0]])).aggregate
    tensor([2.5000])
    """
    check_updates(updates, weights, rule="median")
    n, d = updates.shape
    out = torch.empty(d, dtype=updates.dtype, device=updates.device)
    for cols in column_chunks(n, d):
        out[cols] = column_median_f64(updates[:, cols]).to(updates.dtype)
    return AggregationResult(aggregate=out)


def trimmed_mean(
    updates: torch.Tensor, weights: torch.Tensor | None = None, *, beta: float
) -> AggregationResult:
    """Coordinate-wise beta-trimmed mean.

    Parameters
    ----------
    updates : torch.Tensor
        ``(n, d)`` floating-point tensor, one flattened update per row.
    weights : torch.Tensor, optional
        Validated, then ignored (unweighted, as in Yin et al. and Flower's FedTrimmedAvg).
    beta : float
        Fraction trimmed at each end: per coordinate the ``floor(beta * n)`` largest and the
        ``floor(beta * n)`` smallest values are dropped (``int(beta * n)``, like scipy and Flower).
        Requires ``0 <= beta < 1/2`` as in Yin et al. (which guarantees ``2 floor(beta n) < n``;
        ``beta = 0.5`` is refused even where ``n`` is odd, spec 5.4). Yin et al. analyse
        ``beta = 1/4``.

    Returns
    -------
    AggregationResult
        Mean of the remaining ``n - 2 floor(beta n)`` values per coordinate, summed in float64,
        in the input dtype. ``info["trimmed_per_side"]``.

    Examples
    --------
    >>> x = torch.tensor([[1.0], [2.0], [3.0], [4.0], [100.0]])
    >>> trimmed_mean(x, beta=0.2).aggregate
    tensor([3.])
    """
    check_updates(updates, weights, rule="trimmed_mean")
    n, d = updates.shape
    if not 0 <= beta < 0.5:  # also rejects NaN; implies 2 * floor(beta * n) < n
        raise ValueError(
            f"trimmed_mean requires 0 <= beta < 0.5, i.e. 2*floor(beta*n) < n for every n "
            f"(got beta={beta}, n={n})"
        )
    cut = math.floor(beta * n)
    kept = n - 2 * cut
    out = torch.empty(d, dtype=updates.dtype, device=updates.device)
    for cols in column_chunks(n, d):
        block = updates[:, cols]
        if cut > 0:
            block = torch.topk(block, n - cut, dim=0, largest=False, sorted=False).values
            block = torch.topk(block, kept, dim=0, largest=True, sorted=False).values
        out[cols] = (block.sum(dim=0, dtype=torch.float64) / kept).to(updates.dtype)
    return AggregationResult(aggregate=out, info={"trimmed_per_side": float(cut)})
