"""Weighted mean (FedAvg), the non-robust baseline.

Spec ``robust-aggregation.md`` section 3.1: ``sum_i alpha_i x_i`` with ``alpha_i = n_i / sum_j n_j``
(McMahan et al., 2017), or ``1/n`` when no weights are given.
"""

from __future__ import annotations

import torch

from flower_suite.aggregation.base import (
    AggregationResult,
    check_updates,
    normalized_weights,
    weighted_sum_f64,
)


def weighted_mean(updates: torch.Tensor, weights: torch.Tensor | None = None) -> AggregationResult:
    """Weighted average of the rows of ``updates``.

    Parameters
    ----------
    updates : torch.Tensor
        ``(n, d)`` floating-point tensor, one flattened update per row.
    weights : torch.Tensor, optional
        ``(n,)`` non-negative weights (e.g. sample counts); uniform when None.

    Returns
    -------
    AggregationResult
        ``aggregate = sum_i alpha_i x_i``, accumulated in float64 and returned in the input dtype
        and device; ``selected`` is empty (every input contributes).

    Examples
    --------
    >>> weighted_mean(torch.tensor([[0.0], [3.0]]), torch.tensor([2.0, 1.0])).aggregate
    tensor([1.])
    """
    check_updates(updates, weights, rule="mean")
    alpha = normalized_weights(weights, updates.shape[0], updates.device)
    return AggregationResult(aggregate=weighted_sum_f64(updates, alpha).to(updates.dtype))
