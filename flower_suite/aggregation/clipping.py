"""Centered clipping (Karimireddy, He and Jaggi, ICML 2021).

Starting from a centre ``v`` (default zeros; the paper uses the previous round's aggregate or
momentum), each iteration moves ``v`` by the weighted mean of the clipped differences::

    v <- v + sum_i alpha_i (x_i - v) min(1, tau / ||x_i - v||_2)

Inputs must be updates (deltas) in the same frame as ``center``. Norms and the iterate are kept in
float64; the result is cast to the input dtype.
"""

from __future__ import annotations

import math

import torch

from flower_suite.aggregation.base import (
    AggregationResult,
    check_updates,
    column_chunks,
    normalized_weights,
    sq_distances_to,
)


def centered_clipping(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    tau: float,
    center: torch.Tensor | None = None,
    iterations: int = 1,
) -> AggregationResult:
    """Centered clipping around ``center``.

    Parameters
    ----------
    updates : torch.Tensor
        ``(n, d)`` floating-point updates, one per row.
    weights : torch.Tensor, optional
        ``(n,)`` non-negative weights; uniform when None.
    tau : float
        Clipping radius ``> 0``.
    center : torch.Tensor, optional
        ``(d,)`` starting point (e.g. the previous aggregate); zeros when None.
    iterations : int
        Number of clipping steps ``L >= 1`` (the paper finds 1 enough with a good centre).

    Returns
    -------
    AggregationResult
        Final ``v`` in the input dtype; ``info["clipped"]`` is how many inputs were clipped in
        the last iteration.
    """
    check_updates(updates, weights, rule="centered_clipping")
    n, d = updates.shape
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"centered_clipping: tau must be finite and > 0 (got tau={tau})")
    if iterations < 1:
        raise ValueError(f"centered_clipping: iterations must be >= 1 (got {iterations})")
    if center is None:
        v = torch.zeros(d, dtype=torch.float64, device=updates.device)
    else:
        if center.shape != (d,) or not torch.isfinite(center).all():
            raise ValueError(
                f"centered_clipping: center must be a finite ({d},) tensor, "
                f"got {tuple(center.shape)}"
            )
        v = center.to(device=updates.device, dtype=torch.float64).clone()
    alpha = normalized_weights(weights, n, updates.device)
    clipped = 0
    for _ in range(iterations):
        norms = sq_distances_to(updates, v).sqrt()
        scale = tau / norms.clamp(min=tau)  # min(1, tau / ||x_i - v||), 1 at distance 0
        clipped = int((norms > tau).sum())
        coefficients = alpha * scale
        for cols in column_chunks(n, d):
            v[cols] += coefficients @ (updates[:, cols].to(torch.float64) - v[cols])
    return AggregationResult(aggregate=v.to(updates.dtype), info={"clipped": float(clipped)})
