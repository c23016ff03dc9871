"""signSGD with majority vote (Bernstein, Zhao, Azizzadenesheli and Anandkumar, ICLR 2019).

Spec ``robust-aggregation.md`` sections 3.8 and 5.5: ``v = sign(sum_i sign(x_i))`` per coordinate,
an exact tie giving 0. The inputs must be updates or gradients (deltas), never model weights:
the sign of a model parameter says nothing about the direction of the step.
"""

from __future__ import annotations

import torch

from flower_suite.aggregation.base import AggregationResult, check_updates, column_chunks


def sign_majority(updates: torch.Tensor, weights: torch.Tensor | None = None) -> AggregationResult:
    """Coordinate-wise majority vote over the signs of the inputs.

    Parameters
    ----------
    updates : torch.Tensor
        ``(n, d)`` floating-point updates or gradients (not models), one per row.
    weights : torch.Tensor, optional
        Validated, then ignored: one vote per worker, as in Bernstein et al.

    Returns
    -------
    AggregationResult
        Values in ``{-1, 0, 1}`` in the input dtype (0 on exact ties; the votes are
        counted in float64, exact for any realistic ``n``).

    Examples
    --------
    >>> sign_majority(torch.tensor([[0.5, -1.0], [2.0, 3.0], [-0.1, 4.0]])).aggregate
    tensor([1., 1.])
    """
    check_updates(updates, weights, rule="sign_majority")
    n, d = updates.shape
    out = torch.empty(d, dtype=updates.dtype, device=updates.device)
    for cols in column_chunks(n, d):
        votes = torch.sign(updates[:, cols]).sum(dim=0, dtype=torch.float64)  # exact integers
        out[cols] = torch.sign(votes).to(updates.dtype)
    return AggregationResult(aggregate=out)
