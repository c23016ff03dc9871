"""The base of every robust strategy: FedAvg's round structure, a robust rule in the middle.

``aggregate_train`` decodes the replies once into an (n, d) tensor of updates (reply minus
the global model it was sent; see ``decoding.py``), excludes bad replies with a logged reason,
calls the framework-free rule from ``flower_suite.aggregation`` and adds the robust update to
the global model. It records, per round, which node ids the rule selected and which replies
were rejected (``self.records``), so benchmarks can measure fairness.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from logging import INFO, WARNING

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from flower_suite.aggregation.base import AggregationResult
from flower_suite.strategies.decoding import ArrayLayout, decode_replies

MetricsAggr = Callable[[list[RecordDict], str], MetricRecord]


@dataclass
class RoundRecord:
    """What the robust rule did in one round (node ids, not list positions)."""

    received: list[int] = field(default_factory=list)
    selected: list[int] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    info: dict[str, float] = field(default_factory=dict)
    skipped: str = ""


class RobustFedAvg(FedAvg):
    """FedAvg whose weighted average is replaced by ``self.rule`` over client updates.

    Subclasses implement :meth:`rule` and, if the rule needs it, :meth:`min_replies`.
    Constructor arguments before ``*`` are FedAvg's, in FedAvg's order.
    """

    rule_name = "robust"

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
    ) -> None:
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=min_train_nodes,
            min_evaluate_nodes=min_evaluate_nodes,
            min_available_nodes=min_available_nodes,
            weighted_by_key=weighted_by_key,
            arrayrecord_key=arrayrecord_key,
            configrecord_key=configrecord_key,
            train_metrics_aggr_fn=train_metrics_aggr_fn,
            evaluate_metrics_aggr_fn=evaluate_metrics_aggr_fn,
        )
        self.records: dict[int, RoundRecord] = {}
        self._global: ArrayRecord | None = None

    # -- to implement -------------------------------------------------------------------
    def rule(self, updates: torch.Tensor, weights: torch.Tensor) -> AggregationResult:
        """Aggregate the (n, d) updates into one (d,) update."""
        raise NotImplementedError

    def min_replies(self) -> int:
        """Fewest valid replies the rule can aggregate (the round is skipped below it)."""
        return 1

    def settings(self) -> dict[str, object]:
        """The rule's parameters, for ``summary()`` and logs."""
        return {}

    # -- Flower strategy API ------------------------------------------------------------
    def summary(self) -> None:
        super().summary()
        settings = ", ".join(f"{k}={v}" for k, v in self.settings().items())
        log(INFO, "\t├── Robust rule: %s(%s)", self.rule_name, settings)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._global = arrays  # updates are measured against what the clients received
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        record = self.records.setdefault(server_round, RoundRecord())
        valid, errors = self._check_and_log_replies(list(replies), is_train=True, validate=False)
        record.received = [int(m.metadata.src_node_id) for m in valid]
        if self._global is None:
            raise RuntimeError(f"{self.rule_name}: aggregate_train before configure_train")
        layout = ArrayLayout.of(self._global)
        global_flat = layout.flatten(self._global)
        batch = decode_replies(
            valid,
            global_flat,
            layout,
            arrayrecord_key=self.arrayrecord_key,
            weighted_by_key=self.weighted_by_key,
        )
        record.rejected = batch.rejected
        for node, reason in batch.rejected:
            log(WARNING, "%s: excluded reply from node %d: %s", self.rule_name, node, reason)

        n = len(batch.node_ids)
        if n < self.min_replies():
            record.skipped = (
                f"{n} valid replies, {self.rule_name} needs at least {self.min_replies()}"
            )
            log(WARNING, "%s: round %d skipped: %s", self.rule_name, server_round, record.skipped)
            return None, None

        result = self.rule(batch.updates, batch.weights)
        record.selected = [batch.node_ids[i] for i in result.selected]
        record.info = dict(result.info)
        new_global = global_flat + result.aggregate.detach().cpu().numpy().astype(
            global_flat.dtype, copy=False
        )
        arrays = layout.unflatten(np.asarray(new_global))

        contents = [msg.content for msg in batch.accepted]
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        metrics["rejected-replies"] = len(batch.rejected) + len(errors)
        metrics["selected-replies"] = len(record.selected) if result.selected else n
        return arrays, metrics
