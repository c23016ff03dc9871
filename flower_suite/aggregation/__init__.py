"""Framework-free robust aggregation rules over stacked ``(n, d)`` client updates.

Every rule is ``rule(updates, weights=None, **config) -> AggregationResult`` and is registered in
:data:`AGGREGATORS` under one name (spec ``robust-aggregation.md`` section 3).
"""

from __future__ import annotations

from flower_suite.aggregation.base import (
    AggregationResult,
    check_f,
    check_updates,
    normalized_weights,
)
from flower_suite.aggregation.bulyan import bulyan
from flower_suite.aggregation.clipping import centered_clipping
from flower_suite.aggregation.coordinate import coordinate_median, trimmed_mean
from flower_suite.aggregation.detox import (
    VoteResult,
    check_vote_group_rule,
    detox_aggregate,
    expected_byzantine_groups,
    group_votes,
    hier_aggr,
    majority_vote,
    make_node_groups,
    max_byzantine_groups,
)
from flower_suite.aggregation.distances import pairwise_sq_distances
from flower_suite.aggregation.geometric_median import geometric_median
from flower_suite.aggregation.krum import krum, krum_scores, multi_krum
from flower_suite.aggregation.mean import weighted_mean
from flower_suite.aggregation.sign import sign_majority
from flower_suite.registry import Registry

AGGREGATORS: Registry[AggregationResult] = Registry("aggregation rule")
AGGREGATORS.register("mean", weighted_mean)
AGGREGATORS.register("krum", krum)
AGGREGATORS.register("multi_krum", multi_krum)
AGGREGATORS.register("median", coordinate_median)
AGGREGATORS.register("trimmed_mean", trimmed_mean)
AGGREGATORS.register("bulyan", bulyan)
AGGREGATORS.register("geometric_median", geometric_median)
AGGREGATORS.register("sign_majority", sign_majority)
AGGREGATORS.register("centered_clipping", centered_clipping)

__all__ = [
    "AGGREGATORS",
    "AggregationResult",
    "VoteResult",
    "bulyan",
    "centered_clipping",
    "check_f",
    "check_updates",
    "check_vote_group_rule",
    "coordinate_median",
    "detox_aggregate",
    "expected_byzantine_groups",
    "geometric_median",
    "group_votes",
    "hier_aggr",
    "krum",
    "krum_scores",
    "majority_vote",
    "make_node_groups",
    "max_byzantine_groups",
    "multi_krum",
    "normalized_weights",
    "pairwise_sq_distances",
    "sign_majority",
    "trimmed_mean",
    "weighted_mean",
]
