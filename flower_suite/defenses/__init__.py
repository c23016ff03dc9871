"""Framework-free backdoor defenses over stacked ``(n, d)`` client updates (issue 4).

Each aggregation-level defense has the rule shape of :mod:`flower_suite.aggregation`,
``defense(updates, weights=None, **config) -> AggregationResult``, and is registered in
:data:`DEFENSES`:

- ``norm_clipping`` (alias ``ndc``): norm-difference clipping, then any aggregation rule
  (Sun et al., 2019; spec ``edge-case-backdoors.md`` §5);
- ``weak_dp``: NDC, aggregation, Gaussian noise on the aggregate;
- ``flame``: HDBSCAN on cosine distances, median-norm clipping, noise (Nguyen et al., 2022);
- ``foolsgold``: history-similarity weighting (Fung et al., 2020);
- ``crfl``: global-model clipping and parameter noise (Xie et al., 2021).

The Flower strategies wrapping them live in :mod:`flower_suite.strategies.defenses`.
"""

from __future__ import annotations

from flower_suite.aggregation.base import AggregationResult
from flower_suite.defenses.clipping import (
    ClipResult,
    bind_rule,
    clip_rows,
    clip_to_norm,
    median,
    norm_clipping,
)
from flower_suite.defenses.flame import cosine_distances, flame, hdbscan_labels, largest_cluster
from flower_suite.defenses.foolsgold import (
    FoolsGoldHistory,
    apply_foolsgold_weights,
    foolsgold,
    foolsgold_weights,
)
from flower_suite.defenses.noise import (
    add_gaussian_noise,
    clip_parameters,
    crfl,
    gaussian_noise,
    make_generator,
    weak_dp,
)
from flower_suite.defenses.similarity import cosine_similarity, row_norms
from flower_suite.registry import Registry

DEFENSES: Registry[AggregationResult] = Registry("defense")
for _name, _defense in (
    ("norm_clipping", norm_clipping),
    ("ndc", norm_clipping),
    ("weak_dp", weak_dp),
    ("flame", flame),
    ("foolsgold", foolsgold),
    ("crfl", crfl),
):
    DEFENSES.register(_name, _defense)

__all__ = [
    "DEFENSES",
    "ClipResult",
    "FoolsGoldHistory",
    "add_gaussian_noise",
    "apply_foolsgold_weights",
    "bind_rule",
    "clip_parameters",
    "clip_rows",
    "clip_to_norm",
    "cosine_distances",
    "cosine_similarity",
    "crfl",
    "flame",
    "foolsgold",
    "foolsgold_weights",
    "gaussian_noise",
    "hdbscan_labels",
    "largest_cluster",
    "make_generator",
    "median",
    "norm_clipping",
    "row_norms",
    "weak_dp",
]
