"""Defenses that compare updates with each other (issue 4): FLAME (Nguyen et al., 2022:
HDBSCAN on cosine distances, median-norm clipping, noise) and FoolsGold (Fung et al., 2020:
weights from the similarity of per-node histories), over :mod:`flower_suite.defenses`.

Each takes FedAvg's arguments in FedAvg's order, then keyword-only parameters of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from flower_suite.aggregation.base import AggregationResult
from flower_suite.defenses.clipping import check_positive
from flower_suite.defenses.flame import MIN_CLIENTS, flame
from flower_suite.defenses.foolsgold import (
    FoolsGoldHistory,
    apply_foolsgold_weights,
    foolsgold_weights,
)
from flower_suite.defenses.noise import make_generator
from flower_suite.strategies.defense_base import BATCHNORM_BUFFERS, DefenseBase
from flower_suite.strategies.robust import DEFAULT_WEIGHT_CAP, MetricsAggr


class FLAME(DefenseBase):
    """FLAME: admit the majority HDBSCAN cluster of cosine distances between updates, clip the
    admitted updates to the median norm ``S`` of all updates, average, add
    ``N(0, (noise_lambda * S)^2 I)``. Needs at least 3 replies.

    Parameters (after FedAvg's)
    ---------------------------
    noise_lambda : float, default 0.001
        The paper's ``lambda`` (0.001 for image classification, 0.01 for NLP).
    min_cluster_size : int or None, default None
        HDBSCAN's ``min_cluster_size``; None means ``n // 2 + 1`` (the paper).
    weighted : bool, default False
        Weight the admitted average by ``num-examples`` (the paper averages uniformly).
    exclude_from_clustering : tuple of str
        Array-name suffixes left out of the clustering vector (default: BatchNorm statistics);
        integer arrays are always left out.
    seed : int or None, default 0
        Seeds the noise generator (created once, advanced every round).

    ``records[round]``: ``selected`` = admitted node ids; ``info``: ``admitted``, ``clusters``,
    ``median-norm``, ``fraction-clipped``, ``noise-std``.
    """

    rule_name = "FLAME"

    def __init__(
        self,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
        weighted_by_key: str = "num-examples",
        arrayrecord_key: str = "arrays",
        configrecord_key: str = "config",
        train_metrics_aggr_fn: MetricsAggr | None = None,
        evaluate_metrics_aggr_fn: MetricsAggr | None = None,
        *,
        noise_lambda: float = 0.001,
        min_cluster_size: int | None = None,
        weighted: bool = False,
        exclude_from_clustering: Sequence[str] = BATCHNORM_BUFFERS,
        seed: int | None = 0,
        weight_cap: float | None = DEFAULT_WEIGHT_CAP,
    ) -> None:
        super().__init__(
            fraction_train,
            fraction_evaluate,
            min_train_nodes,
            min_evaluate_nodes,
            min_available_nodes,
            weighted_by_key,
            arrayrecord_key,
            configrecord_key,
            train_metrics_aggr_fn,
            evaluate_metrics_aggr_fn,
            weight_cap=weight_cap,
        )
        check_positive(noise_lambda, name="noise_lambda", rule=self.rule_name, allow_zero=True)
        if min_cluster_size is not None and (
            not isinstance(min_cluster_size, int) or min_cluster_size < 2
        ):
            raise ValueError(
                f"FLAME: min_cluster_size must be an integer >= 2 or None, not {min_cluster_size!r}"
            )
        self.noise_lambda = noise_lambda
        self.min_cluster_size = min_cluster_size
        self.weighted = weighted
        self.exclude_from_clustering = tuple(exclude_from_clustering)
        self.seed = seed
        self.generator = make_generator(seed)

    def min_replies(self) -> int:
        return max(MIN_CLIENTS, self.min_cluster_size or 0)

    def settings(self) -> dict[str, object]:
        return {
            "noise_lambda": self.noise_lambda,
            "min_cluster_size": self.min_cluster_size or "n//2+1",
            "weighted": self.weighted,
            "seed": self.seed,
        }

    def rule(
        self, updates: torch.Tensor, weights: torch.Tensor, node_ids: Sequence[int]
    ) -> AggregationResult:
        return flame(
            updates,
            weights,
            noise_lambda=self.noise_lambda,
            min_cluster_size=self.min_cluster_size,
            generator=self.generator,
            weighted=self.weighted,
            cluster_mask=self._column_mask(self.exclude_from_clustering),
        )


class FoolsGold(DefenseBase):
    """FoolsGold: per-node summed update histories (keyed by node id, so partial participation
    and reply order never mix clients up), cosine similarity, pardoning, logit weighting; the
    round's update is ``sum_i alpha_i x_i / sum_i alpha_i``.

    Parameters (after FedAvg's)
    ---------------------------
    kappa : float, default 1.0
        The paper's logit confidence parameter.
    scope : "all" or "round", default "all"
        Compare each participant's history with every node's history seen so far ("all":
        sybils are caught even when they are not sampled together) or only with this round's
        participants ("round").

    ``records[round].info``: ``weight-<node id>`` for every participant, ``min-weight``,
    ``mean-weight``, ``zero-weight``; ``selected`` = participants with a weight > 0.
    """

    rule_name = "FoolsGold"

    def __init__(
        self,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
        weighted_by_key: str = "num-examples",
        arrayrecord_key: str = "arrays",
        configrecord_key: str = "config",
        train_metrics_aggr_fn: MetricsAggr | None = None,
        evaluate_metrics_aggr_fn: MetricsAggr | None = None,
        *,
        kappa: float = 1.0,
        scope: str = "all",
        weight_cap: float | None = DEFAULT_WEIGHT_CAP,
    ) -> None:
        super().__init__(
            fraction_train,
            fraction_evaluate,
            min_train_nodes,
            min_evaluate_nodes,
            min_available_nodes,
            weighted_by_key,
            arrayrecord_key,
            configrecord_key,
            train_metrics_aggr_fn,
            evaluate_metrics_aggr_fn,
            weight_cap=weight_cap,
        )
        check_positive(kappa, name="kappa", rule=self.rule_name)
        if scope not in ("all", "round"):
            raise ValueError(f"FoolsGold: scope must be 'all' or 'round', not {scope!r}")
        self.kappa, self.scope = kappa, scope
        self.history = FoolsGoldHistory()

    def settings(self) -> dict[str, object]:
        return {"kappa": self.kappa, "scope": self.scope}

    def rule(
        self, updates: torch.Tensor, weights: torch.Tensor, node_ids: Sequence[int]
    ) -> AggregationResult:
        self.history.update(node_ids, updates)  # the paper's history includes this round
        if self.scope == "round":
            alpha = foolsgold_weights(self.history.matrix(node_ids), kappa=self.kappa)
        else:
            everyone = self.history.node_ids
            alpha_all = foolsgold_weights(self.history.matrix(everyone), kappa=self.kappa)
            position = {node: i for i, node in enumerate(everyone)}
            alpha = alpha_all[[position[int(node)] for node in node_ids]]
        result = apply_foolsgold_weights(updates, alpha)
        per_node = {
            f"weight-{int(node)}": float(a) for node, a in zip(node_ids, alpha, strict=True)
        }
        return AggregationResult(result.aggregate, result.selected, {**result.info, **per_node})
