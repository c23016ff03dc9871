"""The base of every robust strategy: FedAvg's round structure, a robust rule in the middle.

``aggregate_train`` decodes the replies once into an (n, d) tensor of updates (reply minus
the global model it was sent) through the one reply validator (``decoding.py``), which excludes
bad replies with a logged reason, calls the framework-free rule from
``flower_suite.aggregation`` and adds the robust update to the global model. It records, per
round, which node ids the rule selected and which replies were rejected (``self.records``), so
benchmarks can measure fairness.

Called the way Flower's own tests call a strategy (``aggregate_train`` on a fresh instance,
without ``configure_train``), a translation-equivariant rule centres on a robust reference of
the replies instead (their coordinate-wise median): ``rule(x_i - c) + c`` equals the rule
applied to the models. Rules that are not translation-equivariant (``needs_sent_model`` in
their :class:`~flower_suite.strategies.contract.Capabilities`) raise
a clear error there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import ClassVar

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from flower_suite.aggregation.base import AggregationResult
from flower_suite.aggregation.coordinate import coordinate_median
from flower_suite.aggregation.weights import check_weight_cap
from flower_suite.strategies.contract import Capabilities, ExperimentSizes, check_min_replies
from flower_suite.strategies.decoding import (
    ArrayLayout,
    DecodedReplies,
    ReplyError,
    decode_replies,
    node_ids_of,
    reply_arrays,
    screen_messages,
)

MetricsAggr = Callable[[list[RecordDict], str], MetricRecord]

# A reply's weight may be at most this multiple of the round's median weight (robust rules).
DEFAULT_WEIGHT_CAP = 10.0


@dataclass
class RoundRecord:
    """What the robust rule did in one round (node ids, not list positions)."""

    received: list[int] = field(default_factory=list)
    selected: list[int] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    info: dict[str, float] = field(default_factory=dict)
    skipped: str = ""


def layout_of_replies(replies: Sequence[Message], arrayrecord_key: str) -> ArrayLayout | None:
    """The array layout most replies share (first seen on ties); None if none is readable.

    Used only when no global model is known: one odd reply cannot impose its layout.
    """
    layouts: dict[tuple[object, ...], ArrayLayout] = {}
    votes: Counter[tuple[object, ...]] = Counter()
    for _, msg in screen_messages(replies)[0]:
        try:
            layout = ArrayLayout.of(reply_arrays(msg, arrayrecord_key))
        except (ReplyError, TypeError, ValueError):
            continue
        signature = tuple(
            sorted(zip(layout.keys, layout.shapes, map(str, layout.dtypes), strict=True))
        )
        layouts.setdefault(signature, layout)
        votes[signature] += 1
    if not votes:
        return None
    return layouts[votes.most_common(1)[0][0]]


def _with_weight(msg: Message, weighted_by_key: str, weight: float) -> RecordDict:
    """The reply's content for metric aggregation, ``weighted_by_key`` set to ``weight``."""
    metrics = next(iter(msg.content.metric_records.values()))
    return RecordDict({"metrics": MetricRecord({**metrics, weighted_by_key: weight})})


def _finite_metric(value: object) -> bool:
    values = value if isinstance(value, list) else [value]
    return all(isinstance(v, int) or (isinstance(v, float) and np.isfinite(v)) for v in values)


class RobustFedAvg(FedAvg):
    """FedAvg whose weighted average is replaced by ``self.rule`` over client updates.

    Subclasses implement :meth:`rule` and, if the rule needs it, :meth:`min_replies`. The
    constructor takes FedAvg's arguments in FedAvg's order, then keyword-only ``weight_cap``:
    a reply's reported weight is capped at that multiple of the round's median weight
    (``None``: no cap; see :mod:`flower_suite.aggregation.weights`).
    """

    rule_name = "robust"
    # A robust rule needs every update (no secure aggregation); see contract.Capabilities.
    capabilities: ClassVar[Capabilities] = Capabilities()

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
        weight_cap: float | None = DEFAULT_WEIGHT_CAP,
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
        if not isinstance(weighted_by_key, str) or not isinstance(arrayrecord_key, str):
            raise TypeError(
                f"{self.rule_name}: weighted_by_key and arrayrecord_key must be strings "
                f"(got {weighted_by_key!r}, {arrayrecord_key!r}); check the argument order"
            )
        check_weight_cap(weight_cap, owner=self.rule_name)
        self.weight_cap = weight_cap
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

    def check_sizes(self, sizes: ExperimentSizes) -> None:
        """Raise :class:`ContractError` if a round cannot give the rule enough replies."""
        check_min_replies(type(self).__name__, self.min_replies(), sizes)

    # -- Flower strategy API ------------------------------------------------------------
    def summary(self) -> None:
        super().summary()
        settings = ", ".join(f"{k}={v}" for k, v in self.settings().items())
        log(
            INFO,
            "\t├── Robust rule: %s(%s), weight cap %s x median",
            self.rule_name,
            settings,
            self.weight_cap,
        )

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

    def _skip(self, server_round: int, record: RoundRecord, reason: str) -> None:
        record.skipped = reason
        log(WARNING, "%s: round %d skipped: %s", self.rule_name, server_round, reason)

    def _decode(
        self, replies: Sequence[Message], global_arrays: ArrayRecord | None
    ) -> tuple[ArrayLayout | None, np.ndarray | None, DecodedReplies | None]:
        """(layout, flat base the updates are relative to, decoded replies)."""
        if global_arrays is None:
            if self.capabilities.needs_sent_model:
                raise RuntimeError(
                    f"{self.rule_name}: aggregate_train needs the model sent in configure_train "
                    "(this rule is not translation-equivariant); call configure_train first"
                )
            layout = layout_of_replies(replies, self.arrayrecord_key)
            reference = None
        else:
            layout = ArrayLayout.of(global_arrays)
            reference = layout.flatten(global_arrays)
        if layout is None:
            return None, None, None
        batch = decode_replies(
            replies,
            reference,
            layout,
            arrayrecord_key=self.arrayrecord_key,
            weighted_by_key=self.weighted_by_key,
            weight_cap=self.weight_cap,
        )
        if reference is None and batch.node_ids:
            # Centre on the replies' coordinate-wise median (see the module docstring).
            centre = coordinate_median(batch.updates).aggregate
            batch.updates -= centre
            reference = centre.numpy()
        return layout, reference, batch

    def robust_step(
        self, server_round: int, replies: Sequence[Message], global_arrays: ArrayRecord | None
    ) -> tuple[ArrayRecord | None, DecodedReplies | None]:
        """Validate and decode ``replies``, apply the rule, return the new global arrays.

        ``global_arrays`` is the model the replies were trained from (None: unknown, see the
        module docstring). Returns ``None`` arrays (and records why) when the round cannot be
        aggregated. Shared by ``aggregate_train`` and the legacy-API adapter.
        """
        record = self.records.setdefault(server_round, RoundRecord())
        record.received = node_ids_of(replies)
        layout, base, batch = self._decode(replies, global_arrays)
        if layout is None or base is None or batch is None:
            self._skip(server_round, record, "no reply carries a readable ArrayRecord")
            return None, batch
        record.rejected = batch.rejected
        for node, reason in batch.rejected:
            log(WARNING, "%s: excluded reply from node %d: %s", self.rule_name, node, reason)
        if batch.capped:
            record.info["capped-weights"] = float(len(batch.capped))
        n = len(batch.node_ids)
        if n < self.min_replies():
            self._skip(
                server_round,
                record,
                f"{n} valid replies, {self.rule_name} needs at least {self.min_replies()}",
            )
            return None, batch
        try:
            result = self.rule(batch.updates, batch.weights, batch.node_ids)
        except ValueError as err:  # a precondition of the rule that these replies break
            self._skip(server_round, record, f"the rule refused the replies: {err}")
            return None, batch
        step = result.aggregate.detach().cpu().numpy().astype(base.dtype, copy=False)
        new_flat = base + step
        if not np.isfinite(new_flat).all():
            self._skip(server_round, record, "the aggregate is not finite")
            return None, batch
        try:
            arrays = layout.unflatten(new_flat)
        except ValueError as err:
            self._skip(server_round, record, str(err))
            return None, batch
        record.selected = [batch.node_ids[i] for i in result.selected]
        record.info.update(result.info)
        return arrays, batch

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        arrays, batch = self.robust_step(server_round, replies, self._global)
        if arrays is None or batch is None:
            return None, None
        record = self.records[server_round]
        return arrays, self._train_metrics(batch, record)

    def _train_metrics(self, batch: DecodedReplies, record: RoundRecord) -> MetricRecord:
        """Client metrics aggregated over the replies the rule selected (all if it selects
        none), weighted by their screened weights, plus how many replies were rejected and
        selected. ``train_metrics_aggr_fn`` sees each selected reply's MetricRecord with the
        screened weight under ``weighted_by_key`` (claims of 1e308 would make Flower's weighted
        average inf / inf)."""
        chosen = set(record.selected) or set(batch.node_ids)
        contents = [
            _with_weight(msg, self.weighted_by_key, float(weight))
            for node, msg, weight in zip(
                batch.node_ids, batch.accepted, batch.weights.tolist(), strict=True
            )
            if node in chosen
        ]
        try:
            metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        except (ValueError, TypeError, KeyError, ArithmeticError) as err:
            # Client metrics are untrusted too: a malformed one must not cost the round.
            log(WARNING, "%s: client metrics not aggregated: %s", self.rule_name, err)
            metrics = MetricRecord()
        for key in [k for k, v in metrics.items() if not _finite_metric(v)]:
            log(
                WARNING,
                "%s: metric %r is not finite (client-reported); dropped",
                self.rule_name,
                key,
            )
            del metrics[key]
        metrics["rejected-replies"] = len(batch.rejected)
        metrics["selected-replies"] = len(chosen)
        return metrics
