"""Secure aggregation around any FedAvg-family Message-API strategy (Salvia-style SecAgg+).

Spec ``secagg.md`` sections 6 and 9; Salvia (seed 002); Bell et al. 2020. :class:`SecAggPlus`
wraps a strategy: sampling and the training config come from its ``configure_train``, the
protocol runs as four ``Grid.send_and_receive`` round trips (setup+keys, share keys, masked
input with the training instruction, unmask) with a per-stage timeout, and the unmasked
weighted mean of the updates replaces the plain weighted average. The new global model is then
handed to the wrapped strategy's ``aggregate_train`` as a single reply weighted by the total
weight, so server-side optimizers (FedAdam, FedYogi, FedAvgM, ...) still apply.

What differs from Flower's ``SecAggPlusWorkflow``: Message API (no ``LegacyContext``), the
strategy receives one aggregate (not ``n`` copies of it), 32-byte X25519 keys, AES-CTR masks,
packed payloads, dropouts survivable at every stage, validated parameters, clipping reported.

Robust rules (Krum, median, trimmed mean, Bulyan, ...) cannot inspect individual updates under
secure aggregation: the server only ever sees the sum. Wrapping one is refused.

A round that loses too many clients aborts (:class:`~flower_suite.secagg.SecAggAbort`, logged
with the stage and counts, recorded in :attr:`SecAggPlus.records`); the global model is left
unchanged and the next round starts afresh with new keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from logging import ERROR, INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Bulyan as FlwrBulyan
from flwr.serverapp.strategy import FedMedian as FlwrFedMedian
from flwr.serverapp.strategy import FedTrimmedAvg as FlwrFedTrimmedAvg
from flwr.serverapp.strategy import Krum as FlwrKrum
from flwr.serverapp.strategy import MultiKrum as FlwrMultiKrum
from flwr.serverapp.strategy import Strategy
from flwr.serverapp.strategy.result import Result
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from flower_suite.clients.secagg_mod import ARRAYS_KEY, METRICS_IN_CLEAR, RECORD_KEY, WEIGHT_KEY
from flower_suite.secagg import (
    AdvertiseKeys,
    MaskedInputReply,
    RandomSource,
    SecAggAbort,
    SecAggConfig,
    SecAggError,
    SecAggServer,
    ShareKeysReply,
    Stage,
    UnmaskReply,
)
from flower_suite.secagg.messages import Message as ProtocolMessage
from flower_suite.strategies.decoding import ArrayLayout
from flower_suite.strategies.robust import RobustFedAvg
from flower_suite.strategies.round_loop import run_rounds

_ROBUST = (RobustFedAvg, FlwrKrum, FlwrMultiKrum, FlwrBulyan, FlwrFedMedian, FlwrFedTrimmedAvg)


@dataclass
class SecAggRoundRecord:
    """What the protocol did in one round (Flower node ids)."""

    sampled: list[int] = field(default_factory=list)
    survivors: list[int] = field(default_factory=list)
    dropped: dict[str, list[int]] = field(default_factory=dict)
    errors: list[tuple[int, str, str]] = field(default_factory=list)  # node, stage, reason
    clipped_fraction: dict[int, float] = field(default_factory=dict)
    aborted: str = ""
    server_cpu_s: float = 0.0
    total_weight: int = 0

    # the runner's selection hook reads these (same names as RoundRecord of robust.py)
    @property
    def selected(self) -> list[int]:
        """Nodes whose inputs are in the aggregate (U3)."""
        return self.survivors

    @property
    def rejected(self) -> list[tuple[int, str]]:
        return [(node, f"{stage}: {reason}") for node, stage, reason in self.errors]

    @property
    def info(self) -> dict[str, float]:
        return {
            "secagg-survivors": float(len(self.survivors)),
            "secagg-dropped": float(len(self.sampled) - len(self.survivors)),
            "secagg-clipped-fraction": max(self.clipped_fraction.values(), default=0.0),
            "secagg-server-cpu-s": self.server_cpu_s,
        }

    @property
    def skipped(self) -> str:
        return self.aborted


class SecAggPlus(Strategy):
    """SecAgg (``num_shares=1.0``) or SecAgg+ (``num_shares=k`` odd, ``k < n``) around
    ``strategy``.

    Parameters
    ----------
    strategy : Strategy
        A FedAvg-family Message-API strategy (FedAvg, FedProx, FedAdam, FedAvgM, ...).
    num_shares, reconstruction_threshold, min_num, min_frac, clipping_range,
    quantization_range, modulus_range, max_weight, stochastic_rounding, clip_warn_fraction
        See :class:`flower_suite.secagg.SecAggConfig` (Flower's names and defaults where
        Flower has them; updates, not models, are clipped to ``[-clipping_range, ...]``).
    timeout : float | None (default: None)
        Seconds to wait for each stage's replies; ``None`` uses ``start``'s ``timeout``.
    metrics_in_clear : bool (default: False)
        Let clients return their training MetricRecord in clear (it reveals per-client
        example counts and losses); by default only the protocol's metrics are reported.
    clip_warn_fraction : float (default: 0.01)
        The server warns when a client reports more clipped entries than this fraction.
    source : RandomSource, optional
        Round ids and graph permutation; OS CSPRNG unless a test injects a seeded source.
    """

    def __init__(
        self,
        strategy: Strategy,
        *,
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
        if isinstance(strategy, SecAggPlus):
            raise ValueError("strategy is already wrapped in SecAggPlus")
        if isinstance(strategy, _ROBUST):
            raise ValueError(
                f"{type(strategy).__name__} inspects individual updates, which secure aggregation "
                "hides from the server (it sees only the sum); wrap a FedAvg-family strategy"
            )
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.strategy = strategy
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
        self.timeout = timeout
        self.metrics_in_clear = metrics_in_clear
        self.source = source
        self.records: dict[int, SecAggRoundRecord] = {}

    # -- Strategy API -----------------------------------------------------------------------
    @property
    def arrayrecord_key(self) -> str:
        return str(getattr(self.strategy, "arrayrecord_key", "arrays"))

    @property
    def weighted_by_key(self) -> str:
        return str(getattr(self.strategy, "weighted_by_key", "num-examples"))

    def summary(self) -> None:
        self.strategy.summary()
        settings = ", ".join(f"{k}={v}" for k, v in vars(self.config).items())
        log(INFO, "\t├── Secure aggregation (SecAgg+): %s", settings)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        raise RuntimeError(
            "SecAggPlus needs several round trips per round: call start() or train_round(), "
            "not configure_train/aggregate_train"
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        raise RuntimeError("SecAggPlus aggregates inside train_round(); see configure_train")

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)

    # -- one secure round --------------------------------------------------------------------
    def train_round(
        self,
        grid: Grid,
        server_round: int,
        arrays: ArrayRecord,
        config: ConfigRecord,
        timeout: float = 3600.0,
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Sample with the wrapped strategy, run the protocol, aggregate the unmasked mean.

        Returns ``(None, None)`` when nobody was sampled or the round aborted (the global
        model stays as it is).
        """
        instructions = list(self.strategy.configure_train(server_round, arrays, config, grid))
        record = self.records[server_round] = SecAggRoundRecord()
        if not instructions:
            return None, None
        nodes = [int(m.metadata.dst_node_id) for m in instructions]
        record.sampled = nodes
        stage_timeout = self.timeout or timeout
        cpu_start = time.process_time()
        try:
            params = self.config.resolve(len(nodes))
        except ValueError as err:
            record.aborted = str(err)
            log(ERROR, "SecAggPlus: round %d skipped: %s", server_round, err)
            return None, None
        layout = ArrayLayout.of(arrays)
        server = SecAggServer(params, source=self.source, expected_length=layout.size)
        run = _Exchange(grid, server_round, nodes, stage_timeout, record)
        try:
            keys = run(Stage.SETUP, server.setup_requests(), AdvertiseKeys)
            shares = run(Stage.SHARE_KEYS, server.receive_keys(keys), ShareKeysReply)
            training = {sid: instructions[sid - 1].content for sid in range(1, len(nodes) + 1)}
            extra = {
                ARRAYS_KEY: self.arrayrecord_key,
                WEIGHT_KEY: self.weighted_by_key,
                METRICS_IN_CLEAR: self.metrics_in_clear,
            }
            run(
                Stage.MASKED_INPUT,
                server.receive_share_keys(shares),
                MaskedInputReply,
                base=training,
                extra=extra,
                on_reply=server.add_masked_input,
            )
            unmasks = run(Stage.UNMASK, server.receive_masked_inputs(), UnmaskReply)
            result = server.receive_unmask(unmasks)
        except SecAggAbort as err:
            record.aborted = str(err)
            record.server_cpu_s = time.process_time() - cpu_start - run.wait_cpu
            log(
                ERROR,
                "SecAggPlus: round %d: %s; global model unchanged; failed replies: %s",
                server_round,
                err,
                record.errors[:5] or "none",
            )
            return None, None
        record.survivors = [nodes[sid - 1] for sid in result.survivors]
        record.dropped = {k: [nodes[s - 1] for s in v] for k, v in result.dropped.items()}
        record.clipped_fraction = {nodes[s - 1]: f for s, f in result.clipped_fraction.items()}
        record.total_weight = result.total_weight
        for node, fraction in record.clipped_fraction.items():
            if fraction > params.clip_warn_fraction:
                log(
                    WARNING,
                    "SecAggPlus: node %d clipped %.2f%% of its update entries to +-%g",
                    node,
                    100 * fraction,
                    params.c,
                )
        global_flat = layout.flatten(arrays).astype(np.float64)
        new_arrays = layout.unflatten(global_flat + result.mean)
        metrics = MetricRecord(
            {
                self.weighted_by_key: result.total_weight,
                "secagg-survivors": len(result.survivors),
                "secagg-dropped": len(nodes) - len(result.survivors),
                "secagg-clipped-fraction": max(result.clipped_fraction.values(), default=0.0),
            }
        )
        if self.metrics_in_clear and run.metrics:
            clear = aggregate_metricrecords(run.metrics, self.weighted_by_key)
            for key, value in clear.items():
                if key != self.weighted_by_key:
                    metrics[key] = value
        record.server_cpu_s = time.process_time() - cpu_start - run.wait_cpu
        # One reply carrying the aggregate: FedAvg's weighted mean of it is itself, and
        # FedOpt-style strategies apply their server optimizer to it.
        synthetic = Message(
            content=RecordDict({self.arrayrecord_key: new_arrays, "metrics": metrics}),
            dst_node_id=0,
            message_type=MessageType.TRAIN,
        )
        return self.strategy.aggregate_train(server_round, [synthetic])

    # -- the round loop (Strategy.start's, with train_round in place of one round trip) ------
    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        log(INFO, "Starting SecAggPlus(%s):", type(self.strategy).__name__)
        self.summary()
        train_config = ConfigRecord() if train_config is None else train_config
        return run_rounds(
            self,
            grid,
            initial_arrays,
            num_rounds,
            lambda rnd, arrays: self.train_round(grid, rnd, arrays, train_config, timeout),
            timeout=timeout,
            evaluate_config=evaluate_config,
            evaluate_fn=evaluate_fn,
            label="SECURE ROUND",
        )


class _Exchange:
    """One ``send_and_receive`` per stage: protocol messages in, parsed replies out.

    Error replies, missing replies and unparsable ones are dropouts (recorded). The CPU time
    spent waiting inside ``send_and_receive`` (an in-process simulation runs clients there)
    is tracked so that the server's CPU time can exclude it.
    """

    def __init__(
        self,
        grid: Grid,
        server_round: int,
        nodes: list[int],
        timeout: float,
        record: SecAggRoundRecord,
    ) -> None:
        self.grid = grid
        self.group = str(server_round)
        self.nodes = nodes
        self.sid_of = {node: sid for sid, node in enumerate(nodes, start=1)}
        self.timeout = timeout
        self.record = record
        self.metrics: list[RecordDict] = []
        self.wait_cpu = 0.0

    def __call__(
        self,
        stage: Stage,
        requests: Mapping[int, ProtocolMessage],
        reply_type: type[ProtocolMessage],
        *,
        base: Mapping[int, RecordDict] | None = None,
        extra: Mapping[str, Any] | None = None,
        on_reply: Callable[[int, Any], None] | None = None,
    ) -> dict[int, Any]:
        messages = []
        for sid, request in requests.items():
            content = RecordDict(dict(base[sid].items())) if base else RecordDict()
            content[RECORD_KEY] = ConfigRecord({**request.to_dict(), **(extra or {})})
            messages.append(
                Message(
                    content=content,
                    dst_node_id=self.nodes[sid - 1],
                    message_type=MessageType.TRAIN,
                    group_id=self.group,
                )
            )
        start = time.process_time()
        replies = list(self.grid.send_and_receive(messages, timeout=self.timeout))
        self.wait_cpu += time.process_time() - start
        out: dict[int, Any] = {}
        for reply in replies:
            node = int(reply.metadata.src_node_id)
            sid = self.sid_of.get(node)
            if sid is None or sid not in requests:
                continue
            if reply.has_error():
                self.record.errors.append((node, stage.label, str(reply.error.reason)))
                continue
            data = reply.content.config_records.get(RECORD_KEY)
            try:
                if data is None:
                    raise SecAggError("reply has no secagg record")
                parsed = reply_type.from_dict(dict(data))
            except SecAggError as err:
                self.record.errors.append((node, stage.label, str(err)))
                continue
            if on_reply is not None:
                on_reply(sid, parsed)
            else:
                out[sid] = parsed
            if reply.content.metric_records:
                self.metrics.append(RecordDict(dict(reply.content.metric_records.items())))
        return out
