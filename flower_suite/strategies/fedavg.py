"""FedAvg and FedProx behind the reply validator: Flower's algorithms, untrusted replies.

Flower's ``FedAvg`` parses every reply with ``np.load`` and averages whatever it finds: one
client's NaN array gives a NaN global model for good, and a reply claiming ``1e308`` examples
next to another makes every weight NaN. These classes take Flower's arguments in Flower's
order and compute the same weighted mean (McMahan et al., 2017), as
``global + sum_i w_i (x_i - global)`` accumulated in float64, over the replies that pass
:mod:`flower_suite.strategies.decoding`; the others are excluded with a logged reason.

Unlike the robust rules, the weights are not capped by default (``weight_cap=None``): FedAvg
trusts reported example counts, as Flower does. FedAvg is the one rule that needs only the sum
of the updates, so it may run under secure aggregation (its ``capabilities``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from logging import INFO, WARNING

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.common import log
from flwr.serverapp import Grid

from flower_suite.aggregation.base import AggregationResult
from flower_suite.aggregation.mean import weighted_mean
from flower_suite.strategies.contract import Capabilities
from flower_suite.strategies.robust import MetricsAggr, RobustFedAvg


class FedAvg(RobustFedAvg):
    """Federated averaging (McMahan et al., 2017) over validated replies.

    Parameters are Flower's ``FedAvg`` parameters in Flower's order, then keyword-only
    ``weight_cap`` (default None: reported weights are trusted, as in Flower).
    """

    rule_name = "FedAvg"
    capabilities = Capabilities(secure_aggregation=True)

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
        weight_cap: float | None = None,
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

    def rule(
        self, updates: torch.Tensor, weights: torch.Tensor, node_ids: Sequence[int]
    ) -> AggregationResult:
        return weighted_mean(updates, weights)


class FedProx(FedAvg):
    """FedProx (Li et al., 2020): FedAvg on the server; clients add ``mu/2 ||w - w_t||^2``.

    As Flower's ``FedProx``: FedAvg's arguments, then ``proximal_mu`` (default 0.0), sent to
    the clients as ``"proximal-mu"`` in every train config.
    """

    rule_name = "FedProx"

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
        proximal_mu: float = 0.0,
        *,
        weight_cap: float | None = None,
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
        finite = isinstance(proximal_mu, int | float) and 0 <= proximal_mu < float("inf")
        if isinstance(proximal_mu, bool) or not finite:
            raise ValueError(f"FedProx: proximal_mu must be a number >= 0, not {proximal_mu!r}")
        self.proximal_mu = float(proximal_mu)
        if self.proximal_mu == 0.0:
            log(WARNING, "FedProx with proximal_mu=0.0 is FedAvg")

    def summary(self) -> None:
        log(INFO, "\t├──> FedProx settings:")
        log(INFO, "\t│\t└── Proximal mu: %s", self.proximal_mu)
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        config["proximal-mu"] = self.proximal_mu
        return super().configure_train(server_round, arrays, config, grid)
