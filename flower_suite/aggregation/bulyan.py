"""Bulyan (El Mhamdi, Guerraoui and Rouault, ICML 2018).

Spec ``robust-aggregation.md`` sections 3.6 and 6.8. Requires ``n >= 4f + 3``.

``variant="iterative"`` (the original):

1. Selection: ``theta = n - 2f``. Repeat ``theta`` times: run Krum on the remaining pool ``R``
   with ``max(1, |R| - f - 2)`` neighbours (capped at ``|R| - 1``) and move the winner to ``S``.
   One pairwise distance matrix is computed up front; each round sub-selects the rows and columns
   of the pool, and the pool's positions are mapped back to original indices (the indices of a
   Krum run on the shrunken pool refer to the pool, not to the inputs).
2. Aggregation: ``beta = theta - 2f``; per coordinate, average the ``beta`` values of ``S``
   closest to the coordinate-wise (true) median of ``S``.

``variant="one_shot"`` reproduces the DETOX reference code (hwang595/DETOX,
``baseline_master._bulyan_multi_krum``): a single Krum scoring pass with ``n - f - 2``
neighbours keeps the ``m = n - f - 2`` lowest scores, then per coordinate it averages the central
``m - 2f`` order statistics of the kept updates (a trimmed mean dropping ``f`` values per side).
Cheaper, but not the published rule.
"""

from __future__ import annotations

from typing import Literal

import torch

from flower_suite.aggregation.base import (
    AggregationResult,
    check_f,
    check_updates,
    column_chunks,
)
from flower_suite.aggregation.distances import pairwise_sq_distances
from flower_suite.aggregation.krum import krum_scores


def _iterative_selection(distances: torch.Tensor, f: int, theta: int) -> list[int]:
    pool = list(range(distances.shape[0]))
    picks: list[int] = []
    for _ in range(theta):
        rows = torch.tensor(pool, device=distances.device)
        sub = distances.index_select(0, rows).index_select(1, rows)
        neighbours = min(max(1, len(pool) - f - 2), len(pool) - 1)
        position = int(torch.argmin(krum_scores(sub, neighbours)))  # index into the pool
        picks.append(pool.pop(position))
    return picks


def _window_mean(
    block: torch.Tensor, beta: int, *, around_median: bool, start: int = 0
) -> torch.Tensor:
    """Per column of ``block`` (theta, c): mean of ``beta`` consecutive order statistics.

    ``around_median``: the window of the ``beta`` values closest to the column's (true) median.
    Those values are contiguous in sorted order, and the window ``[l, l + beta)`` starts at
    ``l = #{j : m - s_j > s_{j+beta} - m}`` (the left-hand side decreases and the right-hand side
    increases with ``j``; distance ties keep the left value). Otherwise the window starts at
    ``start``.
    """
    theta = block.shape[0]
    ordered = torch.sort(block.T.contiguous(), dim=1).values.to(torch.float64)  # (c, theta)
    if around_median:
        half = theta // 2
        if theta % 2 == 1:
            median = ordered[:, half : half + 1]
        else:
            median = (ordered[:, half - 1 : half] + ordered[:, half : half + 1]) / 2
        shift_right = (median - ordered[:, : theta - beta]) > (ordered[:, beta:] - median)
        first = shift_right.sum(dim=1, keepdim=True)
    else:
        first = torch.full((ordered.shape[0], 1), start, device=block.device)
    offsets = torch.arange(beta, device=block.device)
    return ordered.gather(1, first + offsets).sum(dim=1) / beta


def bulyan(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    num_malicious_nodes: int,
    variant: Literal["iterative", "one_shot"] = "iterative",
) -> AggregationResult:
    """Bulyan: iterated Krum selection, then a coordinate-wise average around the median.

    Parameters
    ----------
    updates : torch.Tensor
        ``(n, d)`` floating-point tensor, one flattened update per row.
    weights : torch.Tensor, optional
        Validated but unused (Bulyan is unweighted).
    num_malicious_nodes : int
        ``f``; requires ``n >= 4f + 3``.
    variant : {"iterative", "one_shot"}
        ``"iterative"``: El Mhamdi et al. (default). ``"one_shot"``: the DETOX reference code
        (see the module docstring).

    Returns
    -------
    AggregationResult
        Aggregate in the input dtype (float64 accumulation); ``selected`` the chosen indices in
        pick order (``theta = n - 2f`` of them; ``n - f - 2`` in ascending score for
        ``"one_shot"``); ``info`` has ``theta`` and ``beta`` (values averaged per coordinate).
    """
    check_updates(updates, weights, rule="bulyan")
    n, d = updates.shape
    f = num_malicious_nodes
    check_f(n, f, rule="Bulyan", minimum_n=4 * f + 3, formula="4f+3")
    if variant not in ("iterative", "one_shot"):
        raise ValueError(f"bulyan: variant must be 'iterative' or 'one_shot' (got {variant!r})")
    distances = pairwise_sq_distances(updates)
    if variant == "iterative":
        theta = n - 2 * f
        picks = _iterative_selection(distances, f, theta)
        beta = theta - 2 * f
    else:  # one_shot: theta is the size of the selection, n - f - 2
        theta = n - f - 2
        scores = krum_scores(distances, n - f - 2)
        picks = [int(i) for i in torch.sort(scores, stable=True).indices[:theta].tolist()]
        beta = theta - 2 * f
    rows = torch.tensor(picks, device=updates.device)
    out = torch.empty(d, dtype=updates.dtype, device=updates.device)
    for cols in column_chunks(theta, d):
        block = updates[:, cols].index_select(0, rows)
        mean = _window_mean(block, beta, around_median=variant == "iterative", start=f)
        out[cols] = mean.to(updates.dtype)
    return AggregationResult(
        aggregate=out, selected=tuple(picks), info={"theta": float(theta), "beta": float(beta)}
    )
