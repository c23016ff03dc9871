"""Robust strategies, one thin class per rule of ``flower_suite.aggregation``.

Names follow Flower's (``Krum``, ``MultiKrum``, ``Bulyan``, ``FedMedian``, ``FedTrimmedAvg``)
so an existing ServerApp switches by changing one import. Unlike Flower's, every rule works
on updates with exact float64 distances, decodes each reply once, excludes bad replies
instead of failing the round, and records the selected node ids per round.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from flower_suite.aggregation.base import AggregationResult
from flower_suite.aggregation.clipping import centered_clipping
from flower_suite.aggregation.coordinate import coordinate_median, trimmed_mean
from flower_suite.aggregation.geometric_median import geometric_median
from flower_suite.aggregation.requirements import (
    check_beta,
    check_count,
    trimmed_mean_min_inputs,
)
from flower_suite.aggregation.sign import sign_majority
from flower_suite.strategies.contract import Capabilities
from flower_suite.strategies.krum_family import Bulyan, Krum, MultiKrum
from flower_suite.strategies.robust import DEFAULT_WEIGHT_CAP, MetricsAggr, RobustFedAvg

__all__ = [
    "RFA",
    "Bulyan",
    "CenteredClipping",
    "FedMedian",
    "FedTrimmedAvg",
    "GeometricMedian",
    "Krum",
    "MultiKrum",
    "SignSGD",
]


class FedMedian(RobustFedAvg):
    """Coordinate-wise median (Yin et al., ICML 2018); the true median for even n (the mean of
    the two middle values). Flower's ``FedMedian`` arguments, in Flower's order."""

    rule_name = "FedMedian"

    def rule(
        self, updates: torch.Tensor, weights: torch.Tensor, node_ids: Sequence[int]
    ) -> AggregationResult:
        return coordinate_median(updates, weights)


class FedTrimmedAvg(RobustFedAvg):
    """Coordinate-wise trimmed mean (Yin et al., ICML 2018): drop the ``floor(beta n)``
    largest and smallest values per coordinate, average the rest. Needs ``2 floor(beta n) < n``.

    Flower's positional order: FedAvg's ten arguments, then ``beta`` (default 0.2).
    """

    rule_name = "FedTrimmedAvg"

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
        beta: float = 0.2,
        *,
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
        check_beta(beta, owner=self.rule_name)
        self.beta = beta

    def min_replies(self) -> int:
        return trimmed_mean_min_inputs(self.beta)

    def settings(self) -> dict[str, object]:
        return {"beta": self.beta}

    def rule(
        self, updates: torch.Tensor, weights: torch.Tensor, node_ids: Sequence[int]
    ) -> AggregationResult:
        return trimmed_mean(updates, weights, beta=self.beta)


class GeometricMedian(RobustFedAvg):
    """Geometric median by smoothed Weiszfeld, as in RFA (Pillutla et al., 2019), weighted by
    the screened ``num-examples``, started at the weighted coordinate-wise median and stopped
    on the iterate's movement relative to the inputs' spread (one huge update cannot end the
    iteration early). FedAvg's arguments in FedAvg's order, then keyword-only ``nu``
    (smoothing, 1e-5), ``max_iter`` (500), ``tol`` (1e-9, relative movement) and
    ``weight_cap``; see :func:`flower_suite.aggregation.geometric_median`."""

    rule_name = "GeometricMedian"

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
        nu: float = 1e-5,
        max_iter: int = 500,
        tol: float = 1e-9,
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
        finite = all(isinstance(v, int | float) and math.isfinite(v) for v in (nu, tol))
        if not finite or nu <= 0 or tol < 0:
            raise ValueError(f"GeometricMedian: need finite nu > 0 and tol >= 0 (got {nu}, {tol})")
        check_count(max_iter, name="max_iter", owner=self.rule_name, minimum=1)
        self.nu, self.max_iter, self.tol = nu, max_iter, tol

    def settings(self) -> dict[str, object]:
        return {"nu": self.nu, "max_iter": self.max_iter, "tol": self.tol}

    def rule(
        self, updates: torch.Tensor, weights: torch.Tensor, node_ids: Sequence[int]
    ) -> AggregationResult:
        return geometric_median(updates, weights, nu=self.nu, max_iter=self.max_iter, tol=self.tol)


RFA = GeometricMedian


class SignSGD(RobustFedAvg):
    """signSGD with majority vote (Bernstein et al., 2018): the global model moves by
    ``server_learning_rate * sign(sum_i sign(update_i))`` (ties give 0). FedAvg's arguments in
    FedAvg's order, then keyword-only ``server_learning_rate`` (1e-3) and ``weight_cap``."""

    rule_name = "SignSGD"
    capabilities = Capabilities(needs_sent_model=True)  # sign(x - c) is not sign(x) - sign(c)

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
        server_learning_rate: float = 1e-3,
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
        if not server_learning_rate > 0:
            raise ValueError(
                f"SignSGD: server_learning_rate must be > 0, not {server_learning_rate}"
            )
        self.server_learning_rate = server_learning_rate

    def settings(self) -> dict[str, object]:
        return {"server_learning_rate": self.server_learning_rate}

    def rule(
        self, updates: torch.Tensor, weights: torch.Tensor, node_ids: Sequence[int]
    ) -> AggregationResult:
        vote = sign_majority(updates, weights)
        return AggregationResult(
            vote.aggregate * self.server_learning_rate, vote.selected, vote.info
        )


class CenteredClipping(RobustFedAvg):
    """Centered clipping (Karimireddy et al., ICML 2021): starting at zero, move towards each
    update by at most ``tau``; ``iterations`` refinement steps. FedAvg's arguments in FedAvg's
    order, then keyword-only ``tau`` (1.0), ``iterations`` (1) and ``weight_cap``."""

    rule_name = "CenteredClipping"
    # clips around zero, i.e. around the model that was sent
    capabilities = Capabilities(needs_sent_model=True)

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
        tau: float = 1.0,
        iterations: int = 1,
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
        if not tau > 0 or iterations < 1:
            raise ValueError(
                f"CenteredClipping: need tau > 0, iterations >= 1 (got {tau}, {iterations})"
            )
        self.tau, self.iterations = tau, iterations

    def settings(self) -> dict[str, object]:
        return {"tau": self.tau, "iterations": self.iterations}

    def rule(
        self, updates: torch.Tensor, weights: torch.Tensor, node_ids: Sequence[int]
    ) -> AggregationResult:
        return centered_clipping(updates, weights, tau=self.tau, iterations=self.iterations)
