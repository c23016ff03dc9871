"""Secure and robust at once: SecAgg+ inside random groups, a robust rule over the group means.

Under plain secure aggregation the server sees one sum, and Krum, the median or any backdoor
defense degenerates into a mean. :class:`SecureRobust` splits each round's sampled clients into
``n // g`` groups of ``g`` to ``2g - 1`` clients drawn from ``(seed, round)``
(:func:`flower_suite.secagg.groups.assign_groups`), runs one SecAgg+ instance per group (all
groups in the same four ``send_and_receive`` round trips; the client side is the unchanged
``secagg_mod``), and hands the wrapped robust strategy one reply per group: the global model
plus that group's weighted mean update, weighted by the group's total weight. The rule thus runs
HIER-AGGR with a secure mean inside (DETOX, dissertation ch. 7, Algorithm 7; "median of
means"): ``f`` Byzantine clients corrupt at most ``f`` group means, and the server never sees
fewer than ``g`` clients' mean. See :mod:`flower_suite.secagg.groups` for the trade-off and
:func:`~flower_suite.secagg.groups.choose_group_size`.

Each group inherits the protocol's abort semantics: a group that loses members below its
threshold, or whose secret cannot be recovered, is left out of the rule (logged, recorded in
``records[round].aborted_groups``); the round goes on with the other groups and is skipped only
when too few group means remain for the rule. No client reply can make ``train_round`` raise.
"""

from __future__ import annotations

import time
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from flower_suite.flower_compat import set_source_node
from flower_suite.secagg import RandomSource, SecAggConfig
from flower_suite.secagg.groups import assign_groups, check_group_size, num_groups
from flower_suite.strategies.contract import (
    Capabilities,
    ContractError,
    ExperimentSizes,
    capabilities_of,
)
from flower_suite.strategies.decoding import ArrayLayout
from flower_suite.strategies.round_loop import RoundWrapper
from flower_suite.strategies.secagg_exchange import clear_metrics
from flower_suite.strategies.secagg_groups import GroupedProtocol, GroupRun, SecureRobustRoundRecord
from flower_suite.wire.keys import ARRAYS_KEY, METRICS_IN_CLEAR, WEIGHT_KEY

GROUP_SIZE_FIELD = "secagg.group_size"


def _refusal(strategy: Strategy) -> str:
    """Why ``strategy`` cannot take group means ('' when it can)."""
    caps = capabilities_of(strategy)
    name = type(strategy).__name__
    if caps.own_round_structure:
        return f"{name} runs its own round structure (protocol stages or layer passes)"
    if caps.server_assigned_data:
        return f"{name} assigns data to individual clients and needs their individual replies"
    if caps.changes_architecture:
        return f"{name} changes the model's architecture during the run"
    return ""


class SecureRobust(RoundWrapper):
    """Group-wise SecAgg+ with ``strategy``'s rule over the group means.

    Parameters
    ----------
    strategy : Strategy
        The rule over group means: any FedAvg-family or robust strategy of this package
        (``FedMedian``, ``FedTrimmedAvg``, ``Krum``, ``MultiKrum``, ``Bulyan``,
        ``GeometricMedian``, ``NormClipping``, ...) or of Flower. Its ``configure_train``
        samples the clients; its parameters count group means, not clients (Krum's
        ``num_malicious_nodes`` = corrupted groups <= Byzantine clients).
    group_size : int
        ``g >= 3``: every group has ``g`` to ``2g - 1`` members (sizes differ by at most
        one), so the server sees means of at least ``g`` clients.
    seed : int (default: 0)
        The server seed of the group assignment (per round, logged and recorded).
    num_shares, reconstruction_threshold, min_num, min_frac, clipping_range,
    quantization_range, modulus_range, max_weight, stochastic_rounding, clip_warn_fraction,
    timeout, metrics_in_clear, source
        As in :class:`~flower_suite.strategies.secagg.SecAggPlus`, resolved per group
        (a fraction is a fraction of the group's size).
    """

    capabilities = Capabilities(own_round_structure=True)
    round_label = "SECURE ROBUST ROUND"

    def __init__(
        self,
        strategy: Strategy,
        group_size: int,
        *,
        seed: int = 0,
        num_shares: int | float = 1.0,
        reconstruction_threshold: int | float | None = None,
        min_num: int | None = None,
        min_frac: float | None = None,
        clipping_range: float = 8.0,
        quantization_range: int = 1 << 22,
        modulus_range: int | None = None,
        max_weight: int = 1000,
        stochastic_rounding: bool = True,
        clip_warn_fraction: float = 0.01,
        timeout: float | None = None,
        metrics_in_clear: bool = False,
        source: RandomSource | None = None,
    ) -> None:
        if not isinstance(strategy, Strategy):
            raise TypeError(f"strategy must be a Flower Strategy, got {type(strategy).__name__}")
        reason = _refusal(strategy)
        if reason:
            raise ValueError(f"SecureRobust cannot wrap this strategy: {reason}")
        self.group_size = check_group_size(group_size)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.strategy = strategy
        self.seed = seed
        self.config = SecAggConfig(
            num_shares=num_shares,
            reconstruction_threshold=reconstruction_threshold,
            min_num=min_num,
            min_frac=min_frac,
            clipping_range=clipping_range,
            quantization_range=quantization_range,
            modulus_range=modulus_range,
            max_weight=max_weight,
            stochastic_rounding=stochastic_rounding,
            clip_warn_fraction=clip_warn_fraction,
        )
        for size in (self.group_size, 2 * self.group_size - 1):
            self.config.resolve(size)  # every group size a round can form must resolve
        self.timeout = timeout
        self.metrics_in_clear = metrics_in_clear
        self.source = source
        self.records: dict[int, SecureRobustRoundRecord] = {}

    # -- contract ----------------------------------------------------------------------------
    def min_replies(self) -> int:
        """Clients a round needs: enough groups of ``g`` for the rule's fewest inputs."""
        inner = int(getattr(self.strategy, "min_replies", lambda: 1)())
        return max(1, inner) * self.group_size

    def check_sizes(self, sizes: ExperimentSizes) -> None:
        """A round must form at least one group, and the rule must accept the number of group
        means a round forms (its sizes are checked with group means as clients)."""
        g = self.group_size
        if sizes.clients_per_round < g:
            raise ContractError(
                GROUP_SIZE_FIELD,
                f"{sizes.clients_per_round} clients per round cannot form a group of {g}",
            )
        inner = getattr(self.strategy, "check_sizes", None)
        if inner is None:
            return
        groups = ExperimentSizes(
            num_clients=max(1, sizes.num_clients // g),
            clients_per_round=num_groups(sizes.clients_per_round, g),
            model_size=sizes.model_size,
        )
        try:
            inner(groups)
        except ContractError as err:
            raise ContractError(
                GROUP_SIZE_FIELD,
                f"the rule sees {groups.clients_per_round} group means ({sizes.clients_per_round}"
                f" clients in groups of {g}): {err}; lower group_size or sample more clients",
            ) from None

    def summary(self) -> None:
        self.strategy.summary()
        settings = ", ".join(f"{k}={v}" for k, v in vars(self.config).items())
        log(
            INFO,
            "\t├── Group-wise secure aggregation: group_size=%d, seed=%d",
            self.group_size,
            self.seed,
        )
        log(INFO, "\t├── SecAgg+ per group: %s", settings)

    # -- one round -----------------------------------------------------------------------------
    def train_round(
        self,
        grid: Grid,
        server_round: int,
        arrays: ArrayRecord,
        config: ConfigRecord,
        timeout: float = 3600.0,
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Sample with the wrapped strategy, form the groups, run every group's protocol, and
        let the wrapped strategy aggregate the group means.

        Returns ``(None, None)`` (global model unchanged, reason recorded and logged) when
        nobody was sampled, the sample cannot form one group, every group aborted, or the rule
        refused the group means.
        """
        instructions = list(self.strategy.configure_train(server_round, arrays, config, grid))
        record = self.records[server_round] = SecureRobustRoundRecord()
        if not instructions:
            return None, None
        record.sampled = [int(m.metadata.dst_node_id) for m in instructions]
        try:
            record.groups = assign_groups(
                record.sampled, self.group_size, seed=self.seed, server_round=server_round
            )
        except ValueError as err:
            return self._skip(server_round, record, str(err))
        log(
            INFO,
            "SecureRobust: round %d groups (seed %d): %s",
            server_round,
            self.seed,
            record.groups,
        )
        cpu_start = time.process_time()
        protocol = GroupedProtocol(
            grid,
            server_round,
            record.groups,
            config=self.config,
            timeout=self.timeout or timeout,
            expected_length=ArrayLayout.of(arrays).size,
            source=self.source,
        )
        extra = {
            ARRAYS_KEY: self.arrayrecord_key,
            WEIGHT_KEY: self.weighted_by_key,
            METRICS_IN_CLEAR: self.metrics_in_clear,
        }
        protocol.run({int(m.metadata.dst_node_id): m.content for m in instructions}, extra)
        record.group_records = [run.record for run in protocol.runs]
        record.aborted_groups = {run.index: run.aborted for run in protocol.runs if run.aborted}
        for index, reason in record.aborted_groups.items():
            log(
                WARNING,
                "SecureRobust: round %d: group %d %s left out of the rule: %s",
                server_round,
                index,
                record.groups[index - 1],
                reason,
            )
        completed = [run for run in protocol.runs if run.result is not None]
        if not completed:
            record.server_cpu_s = time.process_time() - cpu_start - protocol.wait_cpu
            return self._skip(server_round, record, "every group's secure aggregation aborted")
        replies = [self._group_reply(run, arrays) for run in completed]
        new_arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        record.server_cpu_s = time.process_time() - cpu_start - protocol.wait_cpu
        self._note_rule(server_round, record, completed)
        if new_arrays is None:
            return None, None
        return new_arrays, self._metrics(metrics, record, completed)

    def _skip(
        self, server_round: int, record: SecureRobustRoundRecord, reason: str
    ) -> tuple[None, None]:
        record.rule_skipped = reason
        log(
            WARNING,
            "SecureRobust: round %d skipped: %s; global model unchanged",
            server_round,
            reason,
        )
        return None, None

    def _group_reply(self, run: GroupRun, arrays: ArrayRecord) -> Message:
        """The group's mean update as one reply to the wrapped strategy: the global model plus
        the mean, weighted by the group's total weight, from node id ``run.index``."""
        assert run.result is not None
        layout = ArrayLayout.of(arrays)
        model = layout.unflatten(layout.flatten(arrays).astype(np.float64) + run.result.mean)
        metrics = MetricRecord(
            {
                self.weighted_by_key: run.result.total_weight,
            }
        )
        content = RecordDict({self.arrayrecord_key: model, "metrics": metrics})
        reply = Message(content=content, dst_node_id=0, message_type=MessageType.TRAIN)
        return set_source_node(reply, run.index)

    def _note_rule(
        self, server_round: int, record: SecureRobustRoundRecord, completed: list[GroupRun]
    ) -> None:
        """Which group means the rule used (its own records, else all of them)."""
        inner_records = getattr(self.strategy, "records", None)
        inner = inner_records.get(server_round) if isinstance(inner_records, dict) else None
        if inner is None:
            record.selected_groups = [run.index for run in completed]
            return
        record.selected_groups = [int(i) for i in getattr(inner, "selected", [])]
        skipped = getattr(inner, "skipped", "")
        if skipped:
            record.rule_skipped = f"the rule over {len(completed)} group means: {skipped}"

    def _metrics(
        self,
        metrics: MetricRecord | None,
        record: SecureRobustRoundRecord,
        completed: list[GroupRun],
    ) -> MetricRecord:
        out = MetricRecord(dict(metrics.items())) if metrics is not None else MetricRecord()
        out.update(record.info)
        if self.metrics_in_clear:
            replies = [content for run in completed for content in run.exchange.metrics]
            for key, value in clear_metrics(replies, self.weighted_by_key).items():
                if key not in out:
                    out[key] = value
        return out
