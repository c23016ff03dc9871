"""Geometric median by smoothed Weiszfeld iterations (RFA, Pillutla, Kakade and Harchaoui, 2019).

Spec ``robust-aggregation.md`` section 3.7: ``argmin_v sum_i alpha_i ||v - x_i||_2`` with
``alpha`` the normalised weights. Start at the weighted mean; each step uses *fresh* weights
``beta_i = alpha_i / max(nu, ||v - x_i||_2)`` (L2 norms, not compounded across iterations) and
sets ``v = sum_i beta_i x_i / sum_i beta_i``. Stop after ``max_iter`` steps or when the objective's
relative change is at most ``ftol`` (the stopping rule of the RFA reference code). The smoothing
``nu`` keeps the step finite when the iterate coincides with an input.

The iterate, norms and objective are kept in float64; the result is cast to the input dtype.
"""

from __future__ import annotations

import math

import torch

from flower_suite.aggregation.base import (
    AggregationResult,
    check_updates,
    normalized_weights,
    sq_distances_to,
    weighted_sum_f64,
)


def geometric_median(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    nu: float = 1e-5,
    max_iter: int = 500,
    ftol: float = 1e-7,
) -> AggregationResult:
    """Smoothed Weiszfeld geometric median (RFA).

    Parameters
    ----------
    updates : torch.Tensor
        ``(n, d)`` floating-point tensor, one flattened update per row.
    weights : torch.Tensor, optional
        ``(n,)`` non-negative weights (sample counts); uniform when None.
    nu : float
        Smoothing ``> 0``: distances below ``nu`` count as ``nu``. Default ``1e-5``.
    max_iter : int
        Maximum number of Weiszfeld steps ``T >= 0``. Default 500.
    ftol : float
        Stop when ``|obj_prev - obj| <= ftol * obj``. Default ``1e-7``.

    Returns
    -------
    AggregationResult
        The final iterate in the input dtype; ``info`` holds ``iterations`` (steps taken),
        ``converged`` (1.0 if the ``ftol`` test stopped it, else 0.0) and ``objective``
        (``sum_i alpha_i ||v - x_i||`` at the returned iterate, float64).
    """
    check_updates(updates, weights, rule="geometric_median")
    if not (math.isfinite(nu) and nu > 0):
        raise ValueError(f"geometric_median: nu must be finite and > 0 (got nu={nu})")
    if max_iter < 0:
        raise ValueError(f"geometric_median: max_iter must be >= 0 (got {max_iter})")
    if not ftol >= 0:
        raise ValueError(f"geometric_median: ftol must be >= 0 (got {ftol})")
    alpha = normalized_weights(weights, updates.shape[0], updates.device)
    median = weighted_sum_f64(updates, alpha)
    norms = sq_distances_to(updates, median).sqrt()
    objective = float(alpha @ norms)
    iterations, converged = 0, False
    while iterations < max_iter:
        beta = alpha / norms.clamp(min=nu)
        median = weighted_sum_f64(updates, beta / beta.sum())
        norms = sq_distances_to(updates, median).sqrt()
        previous, objective = objective, float(alpha @ norms)
        iterations += 1
        if abs(previous - objective) <= ftol * objective:
            converged = True
            break
    return AggregationResult(
        aggregate=median.to(updates.dtype),
        info={
            "iterations": float(iterations),
            "converged": 1.0 if converged else 0.0,
            "objective": objective,
        },
    )
