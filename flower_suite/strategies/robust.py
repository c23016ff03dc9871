"""The base of every robust strategy: FedAvg's round structure, a robust rule in the middle.

``aggregate_train`` decodes the replies once into an (n, d) tensor of updates (reply minus
the global model it was sent; see ``decoding.py``), excludes bad replies with a logged reason,
calls the framework-free rule from ``flower_suite.aggregation`` and adds the robust update to
the global model. It records, per round, which node ids the rule selected and which replies
were rejected (``self.records``), so benchmarks can measure fairness.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from logging import INFO, WARNING

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from flower_suite.aggregation.base import AggregationResult
from flower_suite.strategies.decoding import ArrayLayout, DecodedReplies, decode_replies

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

    Subclasses implement :meth:`rule` and, if the rule needs it, :meth:`min_replies`. The
    constructor takes FedAvg's arguments in FedAvg's order; subclasses add keyword-only rule
    parameters after them.
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
    def rule(
        self, updates: torch.Tensor, weights: torch.Tensor, node_ids: Sequence[int]
    ) -> AggregationResult:
        """Aggregate the (n, d) updates of ``node_ids`` into one (d,) update."""
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
        messages = list(super().configure_train(server_round, arrays, config, grid))
        if len(messages) < self.min_replies():
            log(
                WARNING,
                "%s: round %d samples %d nodes but the rule needs %d replies; "
                "the round will be skipped (raise fraction_train / min_train_nodes)",
                self.rule_name,
                server_round,
                len(messages),
                self.min_replies(),
            )
        return messages

    def robust_step(
        self, server_round: int, replies: Sequence[Message], global_arrays: ArrayRecord
    ) -> tuple[ArrayRecord | None, DecodedReplies]:
        """Validate and decode ``replies``, apply the rule, return the new global arrays.

        Returns ``None`` arrays (and records why) when too few replies are valid. Shared by
        ``aggregate_train`` and the legacy-API adapter.
        """
        record = self.records.setdefault(server_round, RoundRecord())
        record.received = [int(m.metadata.src_node_id) for m in replies]
        layout = ArrayLayout.of(global_arrays)
        global_flat = layout.flatten(global_arrays)
        batch = decode_replies(
            replies,
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
            return None, batch
        result = self.rule(batch.updates, batch.weights, batch.node_ids)
        record.selected = [batch.node_ids[i] for i in result.selected]
        record.info = dict(result.info)
        step = result.aggregate.detach().cpu().numpy().astype(global_flat.dtype, copy=False)
        return layout.unflatten(global_flat + step), batch

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, errors = self._check_and_log_replies(list(replies), is_train=True, validate=False)
        if self._global is None:
            raise RuntimeError(f"{self.rule_name}: aggregate_train before configure_train")
        arrays, batch = self.robust_step(server_round, valid, self._global)
        if arrays is None:
            return None, None
        try:
            metrics = self.train_metrics_aggr_fn(
                [msg.content for msg in batch.accepted], self.weighted_by_key
            )
        except (ValueError, TypeError, KeyError) as err:
            # Client metrics are untrusted too: a malformed one must not cost the round.
            log(WARNING, "%s: client metrics not aggregated: %s", self.rule_name, err)
            metrics = MetricRecord()
        record = self.records[server_round]
        metrics["rejected-replies"] = len(batch.rejected) + len(errors)
        metrics["selected-replies"] = len(record.selected) or len(batch.node_ids)
        return arrays, metrics
