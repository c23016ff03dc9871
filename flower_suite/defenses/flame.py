"""FLAME (Nguyen et al., USENIX Security 2022, "FLAME: Taming Backdoors in Federated
Learning"): cluster, clip, add noise.

1. **Filtering.** Pairwise cosine distances ``c_ij = 1 - cos(x_i, x_j)`` (float64) are clustered
   by HDBSCAN with ``min_cluster_size = n // 2 + 1`` and ``min_samples = 1``
   (``sklearn.cluster.HDBSCAN(metric="precomputed")``). The cluster holding the majority is
   admitted; HDBSCAN's outliers (label ``-1``) are rejected.
2. **Adaptive clipping.** ``S = median_i ||x_i||`` over **all** ``n`` clients, as in the paper
   (the median of the Euclidean distances of every local model to the global one: with an
   honest majority it is an honest norm whatever the rejected updates look like). Every admitted
   update is clipped: ``x_i <- x_i * min(1, S / ||x_i||)``.
3. **Aggregation and noise.** The admitted clipped updates are averaged (uniformly, as in the
   paper) and ``N(0, (lambda S)^2 I)`` is added; the paper uses ``lambda = 0.001`` for image
   classification and ``0.01`` for NLP.

Decisions (``shared/style.md`` traps):

- Distances are between **updates** ``w_i - w``, not raw models: every model shares the
  global ``w``, which dominates their cosines and hides the direction the clients moved in.
- With ``min_cluster_size > n / 2`` at most one cluster exists, and HDBSCAN's condensed tree
  then only has its root: sklearn's default ``allow_single_cluster=False`` labels *every*
  point noise. We pass ``allow_single_cluster=True``, so the root cluster (minus its outliers)
  is found. If several clusters are found (a smaller ``min_cluster_size``), the largest is
  admitted (ties: the one with the lowest member index). If none is found, nothing is admitted
  and the update is zero (the global model is kept, without noise).
- ``cluster_mask`` lets the caller leave columns out of the clustering vector (the strategy
  drops BatchNorm running statistics and integer buffers: they follow data statistics, not the
  training direction). Norms, clipping and noise use the full update.
- A zero update has no direction; its cosine distance to every other update is 1.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from flower_suite.aggregation.base import (
    AggregationResult,
    check_updates,
    normalized_weights,
    weighted_sum_f64,
)
from flower_suite.defenses.clipping import check_positive, clip_rows, median
from flower_suite.defenses.noise import add_gaussian_noise, make_generator
from flower_suite.defenses.similarity import cosine_similarity, row_norms

logger = logging.getLogger("flower_suite.defenses.flame")

MIN_CLIENTS = 3


def cosine_distances(updates: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``1 - cos(x_i, x_j)`` in float64, symmetric, in ``[0, 2]``, zero diagonal."""
    return (1.0 - cosine_similarity(updates, mask)).clamp_(0.0, 2.0).fill_diagonal_(0.0)


def hdbscan_labels(distances: torch.Tensor, min_cluster_size: int) -> np.ndarray:
    """HDBSCAN labels (``-1`` = outlier) on a precomputed ``(n, n)`` distance matrix."""
    # Imported here: scikit-learn adds ~2 s to the start-up of every command that loads
    # the defenses (config errors included), and only FLAME rounds need it.
    from sklearn.cluster import HDBSCAN

    model = HDBSCAN(
        min_cluster_size=min_cluster_size,
        min_samples=1,
        metric="precomputed",
        allow_single_cluster=True,  # see the module docstring: otherwise all points are noise
        copy=True,
    )
    matrix = distances.detach().cpu().numpy().astype(np.float64, copy=True)
    return np.asarray(model.fit(matrix).labels_)


def largest_cluster(labels: np.ndarray) -> list[int]:
    """Indices of the largest cluster (label >= 0); ties to the lowest member index."""
    best: list[int] = []
    for label in sorted(set(labels.tolist()) - {-1}):
        members = np.flatnonzero(labels == label).tolist()
        if len(members) > len(best) or (len(members) == len(best) and members[0] < best[0]):
            best = members
    return best


def _checked_min_cluster_size(min_cluster_size: int | None, n: int) -> int:
    """HDBSCAN's ``min_cluster_size`` for ``n`` updates: the paper's ``n // 2 + 1`` by default."""
    if n < MIN_CLIENTS:
        raise ValueError(f"flame requires n >= {MIN_CLIENTS} updates for a majority (got n={n})")
    mcs = n // 2 + 1 if min_cluster_size is None else min_cluster_size
    if not isinstance(mcs, int) or not 2 <= mcs <= n:
        raise ValueError(f"flame: min_cluster_size must be an integer in [2, n={n}] (got {mcs!r})")
    return mcs


def _check_cluster_mask(cluster_mask: torch.Tensor | None, d: int) -> None:
    if cluster_mask is not None and (
        cluster_mask.shape != (d,) or cluster_mask.dtype != torch.bool or not cluster_mask.any()
    ):
        raise ValueError(f"flame: cluster_mask must be a boolean ({d},) tensor selecting columns")


def _clipped_mean(
    updates: torch.Tensor,
    norms: torch.Tensor,
    admitted: list[int],
    bound: float,
    weights: torch.Tensor | None,
) -> tuple[torch.Tensor, float]:
    """Steps 2-3 before the noise: the admitted updates clipped to norm ``bound`` and averaged
    (with ``weights``, uniformly when None) in float64, and the fraction of them clipped."""
    rows = torch.tensor(admitted, device=updates.device)
    clip = clip_rows(
        updates[rows],
        torch.full((len(admitted),), bound, dtype=torch.float64, device=updates.device),
        norms[rows],
    )
    alpha = normalized_weights(
        None if weights is None else weights[rows], len(admitted), updates.device
    )
    return weighted_sum_f64(clip.updates, alpha), clip.fraction_clipped


def flame(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    noise_lambda: float = 0.001,
    min_cluster_size: int | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    weighted: bool = False,
    cluster_mask: torch.Tensor | None = None,
) -> AggregationResult:
    """FLAME over ``(n, d)`` updates.

    Parameters
    ----------
    updates, weights
        ``(n, d)`` updates (``n >= 3``) and optional ``(n,)`` weights.
    noise_lambda : float, default 0.001
        The paper's ``lambda``: noise std is ``lambda * S`` with ``S`` the median update norm.
    min_cluster_size : int, optional
        HDBSCAN's ``min_cluster_size``; default ``n // 2 + 1`` (the paper). Must be in
        ``[2, n]``.
    seed, generator
        Noise source (a given ``generator`` wins; ``seed=None``: OS entropy).
    weighted : bool, default False
        Average the admitted clipped updates with ``weights`` instead of uniformly (the paper
        averages uniformly).
    cluster_mask : torch.Tensor, optional
        Boolean ``(d,)``: columns used for the cosine distances (default all).

    Returns
    -------
    AggregationResult
        ``mean_{i admitted} clip_S(x_i) + N(0, (lambda S)^2 I)`` in the input dtype;
        ``selected`` are the admitted indices; ``info``: ``admitted``, ``clusters``,
        ``median-norm`` (S), ``fraction-clipped`` (among admitted), ``noise-std``.
    """
    check_updates(updates, weights, rule="flame")
    check_positive(noise_lambda, name="noise_lambda", rule="flame", allow_zero=True)
    n = updates.shape[0]
    mcs = _checked_min_cluster_size(min_cluster_size, n)
    _check_cluster_mask(cluster_mask, updates.shape[1])

    labels = hdbscan_labels(cosine_distances(updates, cluster_mask), mcs)
    admitted = largest_cluster(labels)
    norms = row_norms(updates)
    s = median(norms)  # over all n clients, as in the paper
    info = {
        "admitted": float(len(admitted)),
        "clusters": float(len(set(labels.tolist()) - {-1})),
        "median-norm": s,
        "noise-std": 0.0,
        "fraction-clipped": 0.0,
    }
    if not admitted:  # the paper's "keep the global model"; an exclusion of everyone, so said
        logger.warning(
            "flame: HDBSCAN found no cluster of >= %d of the %d updates; all excluded, "
            "the aggregate is zero (the global model is kept)",
            mcs,
            n,
        )
        return AggregationResult(aggregate=torch.zeros_like(updates[0]), info=info)

    mean, fraction_clipped = _clipped_mean(
        updates, norms, admitted, s, weights if weighted else None
    )
    std = float(noise_lambda) * s
    rng = generator if generator is not None else make_generator(seed)
    aggregate = add_gaussian_noise(mean, std, rng)
    info.update({"noise-std": std, "fraction-clipped": fraction_clipped})
    return AggregationResult(
        aggregate=aggregate.to(updates.dtype), selected=tuple(admitted), info=info
    )
