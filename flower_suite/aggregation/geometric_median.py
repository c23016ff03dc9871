"""Geometric median by smoothed Weiszfeld iterations (RFA).

Pillutla, Kakade and Harchaoui, "Robust Aggregation for Federated Learning" (2019), after
Weiszfeld (1937). Spec ``robust-aggregation.md`` section 3.7: ``argmin_v sum_i alpha_i
||v - x_i||_2`` with ``alpha`` the normalised weights (example counts). Each step uses *fresh*
weights ``beta_i = alpha_i / max(nu, ||v - x_i||_2)`` (L2 norms, never compounded across
iterations) and sets ``v = sum_i beta_i x_i / sum_i beta_i``; ``nu`` keeps the step finite when
the iterate meets an input (it minimises the objective with ``||.||`` smoothed below ``nu``).

Robust in the iteration, not only in the objective (one client must not be able to break it):

- **Start** at the weighted coordinate-wise median, not the weighted mean: the mean of 19
  honest updates and one of norm 1e38 is 5e36 away from all of them.
- **Stop** when the iterate moves by at most ``tol`` times the spread of the inputs around it
  (the ``alpha``-weighted median of ``||v - x_i||``). RFA's reference code stops on the
  objective's relative change instead; one huge update dominates the objective, so a change
  of ``ftol * 1e13`` still counts as converged while the iterate is 174 per coordinate away.
  The median distance is what honest clients set (an outlier holding less than half of the
  weight cannot inflate it), so the rule means the same for every magnitude of outlier.
- **Numerics**: distances and steps in float64; each step is accumulated as
  ``sum_i c_i (x_i - v)`` (differences first), so it is exact relative to the spread even
  for models with a large common offset. float32 inputs cannot overflow float64 squares
  (``d * 3.4e38**2`` stays finite up to ``d ~ 1e231``); float64 inputs so large that their
  squares could are scaled by a power of two first (exact, undone on the result).

The result is cast to the input dtype.
"""

from __future__ import annotations

import math
import warnings

import torch

from flower_suite.aggregation.base import (
    AggregationResult,
    check_updates,
    column_chunks,
    normalized_weights,
    sq_distances_to,
)
from flower_suite.aggregation.coordinate import column_median_f64, weighted_column_median_f64

# log2 of a norm whose square, 2**1000, is comfortably finite in float64 (max ~2**1024).
_SAFE_LOG2_NORM = 500
_TINY = torch.finfo(torch.float64).tiny


def geometric_median(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    nu: float = 1e-5,
    max_iter: int = 500,
    tol: float = 1e-9,
    ftol: float | None = None,
) -> AggregationResult:
    """Smoothed Weiszfeld geometric median (RFA) from the weighted coordinate median.

    Parameters
    ----------
    updates : torch.Tensor
        ``(n, d)`` floating-point tensor, one flattened update per row.
    weights : torch.Tensor, optional
        ``(n,)`` non-negative weights (example counts); uniform when None.
    nu : float
        Smoothing ``> 0``, in the units of ``updates``: distances below ``nu`` count as ``nu``.
        Default ``1e-5`` (RFA).
    max_iter : int
        Maximum number of Weiszfeld steps ``T >= 0`` (``T = 0`` returns the starting point, the
        weighted coordinate median). Default 500 (RFA).
    tol : float
        Stop when a step moves the iterate by at most ``tol * max(s, nu)``, ``s`` the
        ``alpha``-weighted median distance of the inputs to the iterate. Default ``1e-9``: the
        result is then within about ``2e-9 s`` of the exact smoothed geometric median (measured
        against a brute-force reference; the tests require ``1e-6 s``).
    ftol : float, optional
        Deprecated alias of ``tol`` (the old stop rule on the objective's relative change is
        gone, see the module docstring); a ``DeprecationWarning`` when given.

    Returns
    -------
    AggregationResult
        The final iterate in the input dtype; ``info`` holds ``iterations`` (steps taken),
        ``converged`` (1.0 if the ``tol`` test stopped it, else 0.0: ``max_iter`` steps were
        taken, and the iterate returned is the last, whose objective is the lowest so far),
        ``objective`` (``sum_i alpha_i ||v - x_i||`` at the returned iterate, float64),
        ``spread`` (the weighted median distance there) and ``movement`` (the last step's
        length over ``max(spread, nu)`` at the time; 0.0 when no step was taken).
    """
    check_updates(updates, weights, rule="geometric_median")
    tol = _checked_options(nu=nu, max_iter=max_iter, tol=tol, ftol=ftol)
    work, scale = _overflow_safe(updates)
    alpha = normalized_weights(weights, updates.shape[0], updates.device)
    v = _start(work, weights)
    distances = sq_distances_to(work, v).sqrt()
    smoothing = max(nu * scale, _TINY)  # a scaled nu must not underflow to a zero divisor
    iterations, converged, movement = 0, False, 0.0
    while iterations < max_iter:
        spread = max(_weighted_median(distances, alpha), smoothing)
        beta = alpha / distances.clamp(min=smoothing)
        step = _weighted_step(work, beta / beta.sum(), v)
        v += step
        distances = sq_distances_to(work, v).sqrt()
        iterations += 1
        movement = float(torch.linalg.vector_norm(step)) / spread
        if movement <= tol:
            converged = True
            break
    return AggregationResult(
        aggregate=(v / scale).to(updates.dtype),
        info={
            "iterations": float(iterations),
            "converged": 1.0 if converged else 0.0,
            "objective": float(alpha @ distances) / scale,
            "spread": _weighted_median(distances, alpha) / scale,
            "movement": movement,
        },
    )


def _checked_options(*, nu: float, max_iter: int, tol: float, ftol: float | None) -> float:
    """Validate the options of :func:`geometric_median` and return the stop tolerance in effect
    (the deprecated ``ftol`` wins when given, as it always did)."""
    if ftol is not None:
        warnings.warn(
            "geometric_median: ftol is deprecated, pass tol (the stop rule is now on the "
            "iterate's movement relative to the inputs' spread)",
            DeprecationWarning,
            stacklevel=3,  # point at the caller of geometric_median, one frame further out
        )
        tol = ftol
    if not (math.isfinite(nu) and nu > 0):
        raise ValueError(f"geometric_median: nu must be finite and > 0 (got nu={nu})")
    if max_iter < 0:
        raise ValueError(f"geometric_median: max_iter must be >= 0 (got {max_iter})")
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"geometric_median: tol must be finite and >= 0 (got tol={tol})")
    return tol


def _overflow_safe(updates: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``updates`` (or, if its squared norms could overflow float64, a float64 copy scaled by a
    power of two) and the scale applied."""
    largest = float(updates.abs().amax().to(torch.float64))
    if largest == 0.0:
        return updates, 1.0
    # log2 of the largest possible norm, largest * sqrt(d), without forming it (it may overflow)
    log2_bound = math.log2(largest) + 0.5 * math.log2(updates.shape[1])
    if log2_bound <= _SAFE_LOG2_NORM:  # always for float32 / float16 / bfloat16 inputs
        return updates, 1.0
    scale = 2.0 ** (_SAFE_LOG2_NORM - math.ceil(log2_bound))
    return updates.to(torch.float64) * scale, scale


def _start(updates: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The weighted coordinate-wise median, float64 ``(d,)``: inside the honest updates' range
    in every coordinate while the outliers hold less than half of the weight."""
    n, d = updates.shape
    uniform = weights is None or bool((weights == weights[0]).all())
    out = torch.empty(d, dtype=torch.float64, device=updates.device)
    for cols in column_chunks(n, d):
        block = updates[:, cols]
        if uniform:
            out[cols] = column_median_f64(block)
        else:
            assert weights is not None
            out[cols] = weighted_column_median_f64(block, weights)
    return out


def _weighted_median(values: torch.Tensor, alpha: torch.Tensor) -> float:
    return float(weighted_column_median_f64(values[:, None], alpha))


def _weighted_step(
    updates: torch.Tensor, coefficients: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """``sum_i coefficients[i] (x_i - v)`` in float64: the Weiszfeld step from ``v``."""
    n, d = updates.shape
    step = torch.empty(d, dtype=torch.float64, device=updates.device)
    for cols in column_chunks(n, d):
        diff = updates[:, cols].to(torch.float64, copy=True)  # never the caller's tensor
        diff -= v[cols]
        step[cols] = coefficients @ diff
    return step
