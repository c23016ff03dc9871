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

from flower_suite.strategies.decoding import NPY_STYPE
from flower_suite.strategies.robust import RobustFedAvg, RoundRecord
from flower_suite.wire import NpyFormatError, read_npy_header


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
        robust = self.robust
        global_record = None
        if self._sent is not None:
            global_record = ArrayRecord({str(i): Array(a) for i, a in enumerate(self._sent)})
        # Legacy results as minimal Messages, so the same validation and decoding apply.
        replies = [
            _LegacyReply(
                int(proxy.cid) if str(proxy.cid).isdigit() else i,
                _legacy_arrays(res.parameters, self._sent),
                res.num_examples,
                arrayrecord_key=robust.arrayrecord_key,
                weighted_by_key=robust.weighted_by_key,
            )
            for i, (proxy, res) in enumerate(results)
        ]
        new_record, batch = robust.robust_step(server_round, replies, global_record)  # type: ignore[arg-type]
        if new_record is None or batch is None:
            return None, {}
        arrays = [new_record[key].numpy() for key in new_record]
        metrics: dict[str, Scalar] = {"rejected-results": len(batch.rejected)}
        if self.fit_metrics_aggregation_fn is not None:
            chosen = set(robust.records[server_round].selected) or set(batch.node_ids)
            selected = [
                (res.num_examples, res.metrics)
                for reply, (_, res) in zip(replies, results, strict=True)
                if reply.metadata.src_node_id in chosen
            ]
            metrics.update(self.fit_metrics_aggregation_fn(selected))
        return ndarrays_to_parameters(arrays), metrics


def _legacy_arrays(parameters: Parameters, sent: list[np.ndarray] | None) -> dict[str, Array]:
    """A legacy result's tensors as Arrays, still unparsed (the reply validator reads them).

    Each Array's metadata is what the server expects (the sent array's dtype and shape), or,
    without a sent model, what the tensor's own header declares; a tensor that is not
    ``.npy`` gets metadata no layout can match, so its reply is excluded, not parsed.
    """
    arrays = {}
    for i, tensor in enumerate(parameters.tensors):
        if sent is not None and i < len(sent):
            dtype, shape = str(sent[i].dtype), tuple(sent[i].shape)
        else:
            try:
                header = read_npy_header(tensor)
                dtype, shape = str(header.dtype), header.shape
            except NpyFormatError:
                dtype, shape = "not-npy", ()
        data = tensor if isinstance(tensor, bytes) else b""
        arrays[str(i)] = Array(dtype=dtype, shape=shape, stype=NPY_STYPE, data=data)
    return arrays


class _LegacyReply:
    """Just enough of a Message for ``decode_replies``: content, metadata, weight."""

    def __init__(
        self,
        node_id: int,
        arrays: dict[str, Array],
        num_examples: object,
        *,
        arrayrecord_key: str,
        weighted_by_key: str,
    ) -> None:
        self.metadata = _Meta(node_id)
        self.content = RecordDict(
            {
                arrayrecord_key: ArrayRecord(arrays),
                "metrics": MetricRecord({weighted_by_key: _as_weight(num_examples)}),
            }
        )

    def has_error(self) -> bool:
        return False


def _as_weight(value: object) -> float:
    """The reported example count as a float; NaN (rejected later) if it is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return float("nan")
    try:
        return float(value)
    except OverflowError:
        return float("inf")


class _Meta:
    def __init__(self, src_node_id: int) -> None:
        self.src_node_id = src_node_id
