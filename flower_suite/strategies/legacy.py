"""Run our robust rules under Flower's legacy strategy API (``flwr.server.strategy``).

For deployments still on ``start_server`` / ``LegacyContext`` / ``NumPyClient``::

    from flower_suite.strategies import Krum
    from flower_suite.strategies.legacy import LegacyRobust

    strategy = LegacyRobust(Krum(num_malicious_nodes=2), min_fit_clients=10)  # the one line

The adapter is a legacy ``FedAvg`` (sampling, configs, evaluation unchanged) whose
``aggregate_fit`` runs the wrapped strategy's rule on updates against the parameters sent in
``configure_fit``, with the same per-reply validation and per-round records.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
from flwr.common import Parameters, Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg as LegacyFedAvg

from flower_suite.strategies.robust import RobustFedAvg, RoundRecord


class LegacyRobust(LegacyFedAvg):
    """A legacy-API FedAvg aggregating with ``robust.rule``; other kwargs go to legacy FedAvg."""

    def __init__(self, robust: RobustFedAvg, **fedavg_kwargs: Any) -> None:
        super().__init__(**fedavg_kwargs)
        self.robust = robust
        self._sent: list[np.ndarray] | None = None

    def __repr__(self) -> str:
        return f"LegacyRobust({self.robust.rule_name})"

    @property
    def records(self) -> dict[int, RoundRecord]:
        return self.robust.records

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, Any]]:
        self._sent = parameters_to_ndarrays(parameters)
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, Any]],
        failures: list[Any],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        if not results or (failures and not self.accept_failures):
            return None, {}
        if self._sent is None:
            raise RuntimeError("LegacyRobust: aggregate_fit before configure_fit")
        sent = [np.asarray(a) for a in self._sent]
        global_record = ArrayRecord({str(i): Array(a) for i, a in enumerate(sent)})
        # Legacy results as minimal Messages, so the same validation and decoding apply.
        replies = [
            _LegacyReply(
                int(proxy.cid) if str(proxy.cid).isdigit() else i,
                parameters_to_ndarrays(res.parameters),
                res.num_examples,
            )
            for i, (proxy, res) in enumerate(results)
        ]
        new_record, batch = self.robust.robust_step(server_round, replies, global_record)  # type: ignore[arg-type]
        if new_record is None:
            return None, {}
        arrays = [new_record[str(i)].numpy() for i in range(len(sent))]
        metrics: dict[str, Scalar] = {"rejected-results": len(batch.rejected)}
        if self.fit_metrics_aggregation_fn is not None:
            kept = set(batch.node_ids)
            accepted = [
                (res.num_examples, res.metrics)
                for reply, (_, res) in zip(replies, results, strict=True)
                if reply.metadata.src_node_id in kept
            ]
            metrics.update(self.fit_metrics_aggregation_fn(accepted))
        return ndarrays_to_parameters(arrays), metrics


class _LegacyReply:
    """Just enough of a Message for ``decode_replies``: content, metadata, weight."""

    def __init__(self, node_id: int, arrays: list[np.ndarray], num_examples: int) -> None:
        self.metadata = _Meta(node_id)
        self.content = RecordDict(
            {
                "arrays": ArrayRecord({str(i): Array(np.asarray(a)) for i, a in enumerate(arrays)}),
                "metrics": MetricRecord({"num-examples": int(num_examples)}),
            }
        )


class _Meta:
    def __init__(self, src_node_id: int) -> None:
        self.src_node_id = src_node_id
