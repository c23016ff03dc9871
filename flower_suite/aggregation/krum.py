"""Krum and Multi-Krum (Blanchard et al., NeurIPS 2017).

Spec ``robust-aggregation.md`` sections 3.2-3.3 and 6.9. The score of update ``i`` is the sum of
the squared L2 distances to its ``n - f - 2`` nearest *other* updates; Krum returns the update with
the lowest score (ties to the lowest index), Multi-Krum averages the ``m`` lowest-scoring ones
(default ``m = n - f``). Both need ``n >= 2f + 3``.

Neighbour convention: Blanchard et al., Flower, FedML and DETOX use ``n - f - 2`` neighbours,
ByzFL and FLPoison ``n - f - 1``. We default to ``n - f - 2`` and expose ``num_neighbours`` so the
other convention is one argument away.

Distances come from :func:`~flower_suite.aggregation.distances.pairwise_sq_distances` (float64,
exact zero diagonal), never from a float32 Gram matrix, and the diagonal is excluded explicitly.
"""

from __future__ import annotations

import torch

from flower_suite.aggregation.base import (
    AggregationResult,
    check_f,
    check_updates,
    normalized_weights,
    weighted_sum_f64,
)
from flower_suite.aggregation.distances import pairwise_sq_distances


def krum_scores(distances: torch.Tensor, num_neighbours: int) -> torch.Tensor:
    """Krum score of every vector from its squared pairwise distances.

    Parameters
    ----------
    distances : torch.Tensor
        ``(n, n)`` float64 matrix of squared distances ``||x_i - x_j||^2``.
    num_neighbours : int
        How many nearest other vectors enter each score, ``0 <= num_neighbours <= n - 1``.

    Returns
    -------
    torch.Tensor
        ``(n,)`` float64, ``score[i] = sum of the num_neighbours smallest D[i, j], j != i``. The
        diagonal is masked with ``+inf`` rather than trusted to be zero.
    """
    n = distances.shape[0]
    if distances.shape != (n, n):
        raise ValueError(f"krum: distances must be square, got {tuple(distances.shape)}")
    if not 0 <= num_neighbours <= n - 1:
        raise ValueError(f"krum: num_neighbours must be in [0, n-1] (got {num_neighbours}, n={n})")
    off_diagonal = distances.to(torch.float64).clone()
    off_diagonal.fill_diagonal_(float("inf"))
    nearest = torch.topk(off_diagonal, num_neighbours, dim=1, largest=False).values
    return nearest.sum(dim=1)


def _scores(
    updates: torch.Tensor, f: int, num_neighbours: int | None, *, rule: str
) -> torch.Tensor:
    n = updates.shape[0]
    check_f(n, f, rule=rule, minimum_n=2 * f + 3, formula="2f+3")
    k = n - f - 2 if num_neighbours is None else num_neighbours
    if not 1 <= k <= n - 1:
        raise ValueError(f"{rule}: num_neighbours must be in [1, n-1] (got {k}, n={n})")
    return krum_scores(pairwise_sq_distances(updates), k)


def krum(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    num_malicious_nodes: int,
    num_neighbours: int | None = None,
) -> AggregationResult:
    """Krum: the single update closest to its ``n - f - 2`` nearest neighbours.

    Parameters
    ----------
    updates : torch.Tensor
        ``(n, d)`` floating-point tensor, one flattened update per row.
    weights : torch.Tensor, optional
        Validated but unused: Krum selects, it does not average.
    num_malicious_nodes : int
        ``f``, the assumed number of Byzantine inputs; requires ``n >= 2f + 3``.
    num_neighbours : int, optional
        Neighbours per score; default ``n - f - 2`` (Blanchard et al.). ByzFL uses ``n - f - 1``.

    Returns
    -------
    AggregationResult
        ``aggregate`` is a copy of ``updates[i*]``, ``selected == (i*,)``, ``info["score"]`` its
        score. Ties go to the lowest index.
    """
    check_updates(updates, weights, rule="krum")
    scores = _scores(updates, num_malicious_nodes, num_neighbours, rule="krum")
    best = int(torch.argmin(scores))  # first minimum on ties
    return AggregationResult(
        aggregate=updates[best].clone(), selected=(best,), info={"score": float(scores[best])}
    )


def multi_krum(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    num_malicious_nodes: int,
    num_nodes_to_select: int | None = None,
    num_neighbours: int | None = None,
) -> AggregationResult:
    """Multi-Krum: weighted mean of the ``m`` updates with the lowest Krum scores.

    Parameters
    ----------
    updates : torch.Tensor
        ``(n, d)`` floating-point tensor, one flattened update per row.
    weights : torch.Tensor, optional
        ``(n,)`` non-negative weights (sample counts) for the average of the selected updates;
        uniform when None (the DETOX setting).
    num_malicious_nodes : int
        ``f``; requires ``n >= 2f + 3``.
    num_nodes_to_select : int, optional
        ``m`` in ``[1, n]``; default ``n - f`` (spec 6.9; DETOX's code keeps ``n - f - 2``).
        ``m = 1`` is Krum, ``m = n`` the (weighted) mean.
    num_neighbours : int, optional
        Neighbours per score; default ``n - f - 2``.

    Returns
    -------
    AggregationResult
        float64-accumulated mean in the input dtype; ``selected`` the sorted chosen indices (ties
        in score go to the lower index); ``info["max_selected_score"]``.
    """
    check_updates(updates, weights, rule="multi_krum")
    n = updates.shape[0]
    f = num_malicious_nodes
    check_f(n, f, rule="multi_krum", minimum_n=2 * f + 3, formula="2f+3")
    m = n - f if num_nodes_to_select is None else num_nodes_to_select
    if not 1 <= m <= n:
        raise ValueError(f"multi_krum: num_nodes_to_select must be in [1, n] (got {m}, n={n})")
    scores = _scores(updates, f, num_neighbours, rule="multi_krum")
    order = torch.sort(scores, stable=True).indices[:m]
    chosen = torch.sort(order).values
    coefficients = torch.zeros(n, dtype=torch.float64, device=updates.device)
    coefficients[chosen] = normalized_weights(weights, n, updates.device)[chosen]
    if coefficients.sum() <= 0:
        raise ValueError("multi_krum: the selected updates have zero total weight")
    aggregate = weighted_sum_f64(updates, coefficients / coefficients.sum()).to(updates.dtype)
    return AggregationResult(
        aggregate=aggregate,
        selected=tuple(int(i) for i in chosen.tolist()),
        info={"max_selected_score": float(scores[order[-1]])},
    )
