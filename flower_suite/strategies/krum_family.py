"""Krum, Multi-Krum and Bulyan: the strategies that select replies by pairwise distances.

Names, arguments and positional order follow Flower's (``flwr.serverapp.strategy``), so an
existing ServerApp switches by changing one import; the rules (``flower_suite.aggregation``)
run on updates with exact float64 distances. Deliberate differences are listed in the README.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch

from flower_suite.aggregation.base import AggregationResult
from flower_suite.aggregation.bulyan import bulyan
from flower_suite.aggregation.krum import multi_krum
from flower_suite.aggregation.requirements import (
    bulyan_min_inputs,
    check_rule_params,
    krum_min_inputs,
)
from flower_suite.strategies.robust import DEFAULT_WEIGHT_CAP, MetricsAggr, RobustFedAvg


class MultiKrum(RobustFedAvg):
    """Multi-Krum (Blanchard et al., NeurIPS 2017): the weighted mean of the
    ``num_nodes_to_select`` updates with the lowest Krum scores, a score being the sum of
    squared distances to the ``num_neighbours`` nearest other updates.

    Flower's positional order: FedAvg's first five arguments, ``num_malicious_nodes``,
    ``num_nodes_to_select``, then FedAvg's remaining five.

    Parameters
    ----------
    num_malicious_nodes : int (default: 0)
        f, the Byzantine replies tolerated; needs ``n >= 2f + 3`` valid replies.
    num_nodes_to_select : int | None (default: None)
        m; None means ``n - f`` (the paper; **Flower's default is 1**, i.e. Krum).
    num_neighbours : int | None (keyword-only, default: None)
        k; None means ``n - f - 2`` (Blanchard et al., Flower; ByzFL uses ``n - f - 1``).
    weight_cap : float | None (keyword-only, default: 10.0)
        A reply's weight in the mean is capped at this multiple of the median weight.
    """

    rule_name = "MultiKrum"

    def __init__(
        self,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
        num_malicious_nodes: int = 0,
        num_nodes_to_select: int | None = None,
        weighted_by_key: str = "num-examples",
        arrayrecord_key: str = "arrays",
        configrecord_key: str = "config",
        train_metrics_aggr_fn: MetricsAggr | None = None,
        evaluate_metrics_aggr_fn: MetricsAggr | None = None,
        *,
        num_neighbours: int | None = None,
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
        check_rule_params(
            "multi_krum",
            {
                "num_malicious_nodes": num_malicious_nodes,
                "num_nodes_to_select": num_nodes_to_select,
                "num_neighbours": num_neighbours,
            },
            owner=self.rule_name,
        )
        self.num_malicious_nodes = num_malicious_nodes
        self.num_nodes_to_select = num_nodes_to_select
        self.num_neighbours = num_neighbours

    def min_replies(self) -> int:
        return krum_min_inputs(
            self.num_malicious_nodes, self.num_nodes_to_select, self.num_neighbours
        )

    def settings(self) -> dict[str, object]:
        return {
            "f": self.num_malicious_nodes,
            "m": self.num_nodes_to_select or "n-f",
            "neighbours": self.num_neighbours or "n-f-2",
        }

    def rule(
        self, updates: torch.Tensor, weights: torch.Tensor, node_ids: Sequence[int]
    ) -> AggregationResult:
        return multi_krum(
            updates,
            weights,
            num_malicious_nodes=self.num_malicious_nodes,
            num_nodes_to_select=self.num_nodes_to_select,
            num_neighbours=self.num_neighbours,
        )


class Krum(MultiKrum):
    """Krum (Blanchard et al., NeurIPS 2017): Multi-Krum with ``num_nodes_to_select = 1``, the
    single update closest to its ``num_neighbours`` nearest neighbours (as in Flower, one code
    path). Needs ``n >= 2f + 3`` replies.

    Flower's positional order: FedAvg's first five arguments, ``num_malicious_nodes``, then
    FedAvg's remaining five; ``num_neighbours`` and ``weight_cap`` are keyword-only.
    """

    rule_name = "Krum"

    def __init__(
        self,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
        num_malicious_nodes: int = 0,
        weighted_by_key: str = "num-examples",
        arrayrecord_key: str = "arrays",
        configrecord_key: str = "config",
        train_metrics_aggr_fn: MetricsAggr | None = None,
        evaluate_metrics_aggr_fn: MetricsAggr | None = None,
        *,
        num_neighbours: int | None = None,
        weight_cap: float | None = DEFAULT_WEIGHT_CAP,
    ) -> None:
        super().__init__(
            fraction_train,
            fraction_evaluate,
            min_train_nodes,
            min_evaluate_nodes,
            min_available_nodes,
            num_malicious_nodes,
            1,
            weighted_by_key,
            arrayrecord_key,
            configrecord_key,
            train_metrics_aggr_fn,
            evaluate_metrics_aggr_fn,
            num_neighbours=num_neighbours,
            weight_cap=weight_cap,
        )

    def settings(self) -> dict[str, object]:
        return {"f": self.num_malicious_nodes, "neighbours": self.num_neighbours or "n-f-2"}


class Bulyan(RobustFedAvg):
    """Bulyan (El Mhamdi et al., ICML 2018), the paper's iterative algorithm: theta = n - 2f
    Krum selections, then per coordinate the mean of the beta = theta - 2f values closest to
    the median. Needs ``n >= 4f + 3`` replies.

    Flower's positional order and defaults, ``selection_rule`` included. Flower's Bulyan
    selects theta replies in one Multi-Krum pass (``selection_rule`` over RecordDicts); ours
    runs the paper's iterated Krum on updates (``variant="iterative"``) or DETOX's one-shot
    variant (``variant="one_shot"``). A custom ``selection_rule`` is refused with an error
    rather than silently ignored.
    """

    rule_name = "Bulyan"

    def __init__(
        self,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
        num_malicious_nodes: int = 0,
        weighted_by_key: str = "num-examples",
        arrayrecord_key: str = "arrays",
        configrecord_key: str = "config",
        train_metrics_aggr_fn: MetricsAggr | None = None,
        evaluate_metrics_aggr_fn: MetricsAggr | None = None,
        selection_rule: Callable[..., Any] | None = None,
        *,
        variant: Literal["iterative", "one_shot"] = "iterative",
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
        if selection_rule is not None:
            raise ValueError(
                "Bulyan: a custom selection_rule is not supported (selection runs on updates "
                "with iterated Krum); choose variant='iterative' or 'one_shot'"
            )
        check_rule_params(
            "bulyan", {"num_malicious_nodes": num_malicious_nodes}, owner=self.rule_name
        )
        if variant not in ("iterative", "one_shot"):
            raise ValueError(f"Bulyan: variant must be 'iterative' or 'one_shot', not {variant!r}")
        self.num_malicious_nodes = num_malicious_nodes
        self.variant = variant

    def min_replies(self) -> int:
        return bulyan_min_inputs(self.num_malicious_nodes)

    def settings(self) -> dict[str, object]:
        return {"f": self.num_malicious_nodes, "variant": self.variant}

    def rule(
        self, updates: torch.Tensor, weights: torch.Tensor, node_ids: Sequence[int]
    ) -> AggregationResult:
        return bulyan(
            updates, weights, num_malicious_nodes=self.num_malicious_nodes, variant=self.variant
        )
