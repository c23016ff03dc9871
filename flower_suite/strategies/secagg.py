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
unchanged and the next round starts afresh with new keys. No client can make ``train_round``
raise: a bad reply excludes its sender (``records[round].errors``), bad shares are left out
and reconstructed around, and a round that cannot complete (too few survivors or shares, an
unrecoverable secret, an out-of-range or zero-weight sum) is a logged, recorded skip.
FedMA cannot be wrapped: its replies are individual layers, not a sum.
"""

from __future__ import annotations

import time
from logging import ERROR, INFO

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from flower_suite.secagg import (
    AdvertiseKeys,
    AggregateResult,
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
from flower_suite.strategies.contract import (
    Capabilities,
    ContractError,
    ExperimentSizes,
    capabilities_of,
)
from flower_suite.strategies.decoding import ArrayLayout
from flower_suite.strategies.fedma import FedMA
from flower_suite.strategies.round_loop import RoundWrapper
from flower_suite.strategies.secagg_exchange import (
    SecAggRoundRecord,
    StageExchange,
    clear_metrics,
    record_result,
    server_notes,
)
from flower_suite.wire.keys import ARRAYS_KEY, METRICS_IN_CLEAR, WEIGHT_KEY


def inspects_individual_updates(strategy: Strategy | type[Strategy]) -> bool:
    """True for a strategy (or class) whose rule needs each update, not only their sum: it
    cannot run under secure aggregation (its declared :class:`Capabilities`)."""
    return not capabilities_of(strategy).secure_aggregation


# FedMA's rounds are layer-wise train.fedma messages whose replies carry one client's trained
# layer and label histogram: nothing a sum of masked vectors can replace.
FEDMA_REFUSAL = (
    "FedMA matches individual clients' layers (each train.fedma reply carries a trained layer "
    "and a label histogram in clear), which secure aggregation cannot mask; run it without "
    "secure aggregation"
)


class SecAggPlus(RoundWrapper):
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

    # It aggregates only the sum itself; it runs its own protocol round trips.
    capabilities = Capabilities(secure_aggregation=True, own_round_structure=True)
    round_label = "SECURE ROUND"

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
        if isinstance(strategy, FedMA):
            raise ValueError(FEDMA_REFUSAL)
        if inspects_individual_updates(strategy):
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

    # -- contract ----------------------------------------------------------------------------
    def min_replies(self) -> int:
        """The wrapped strategy's (the protocol's own minimum is checked per round)."""
        return int(getattr(self.strategy, "min_replies", lambda: 1)())

    def check_sizes(self, sizes: ExperimentSizes) -> None:
        """The protocol's parameters must resolve for the sampled clients, and the wrapped
        strategy's own sizes must fit."""
        try:
            self.config.resolve(sizes.clients_per_round)
        except ValueError as err:
            raise ContractError("secagg", str(err)) from None
        inner = getattr(self.strategy, "check_sizes", None)
        if inner is not None:
            inner(sizes)

    def summary(self) -> None:
        self.strategy.summary()
        settings = ", ".join(f"{k}={v}" for k, v in vars(self.config).items())
        log(INFO, "\t├── Secure aggregation (SecAgg+): %s", settings)

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

        Returns ``(None, None)`` when nobody was sampled or the round was skipped (the global
        model stays as it is). Nothing a client sends makes this raise: a bad reply excludes
        its sender, and a round that cannot complete (too few survivors, a secret that cannot
        be reconstructed, an out-of-range or zero-weight sum) is a logged, recorded skip.
        """
        instructions = list(self.strategy.configure_train(server_round, arrays, config, grid))
        record = self.records[server_round] = SecAggRoundRecord()
        if not instructions:
            return None, None
        nodes = [int(m.metadata.dst_node_id) for m in instructions]
        record.sampled = nodes
        cpu_start = time.process_time()
        run = StageExchange(grid, server_round, nodes, self.timeout or timeout, record)
        server: SecAggServer | None = None
        try:
            params = self.config.resolve(len(nodes))
            server = SecAggServer(
                params, source=self.source, expected_length=ArrayLayout.of(arrays).size
            )
            result = self._run_protocol(server, run, instructions)
        except (SecAggAbort, SecAggError, ValueError) as err:
            # SecAggAbort: the protocol's own stop; the others are a safety net, so that no
            # input can end the run (they name what failed in the record and the log)
            record.aborted = str(err)
            log(
                ERROR,
                "SecAggPlus: round %d skipped: %s; global model unchanged; failed replies: %s",
                server_round,
                err,
                (record.errors + server_notes(server, nodes))[:5] or "none",
            )
            return None, None
        finally:
            record.errors.extend(server_notes(server, nodes))
            record.server_cpu_s = time.process_time() - cpu_start - run.wait_cpu
        record_result(record, result, nodes, params)
        return self._aggregate(server_round, arrays, result, nodes, run)

    def _run_protocol(
        self, server: SecAggServer, run: StageExchange, instructions: list[Message]
    ) -> AggregateResult:
        """The four round trips (spec section 6); stage 3 carries the training instruction."""
        keys = run(Stage.SETUP, server.setup_requests(), AdvertiseKeys)
        shares = run(Stage.SHARE_KEYS, server.receive_keys(keys), ShareKeysReply)
        training = {sid: msg.content for sid, msg in enumerate(instructions, start=1)}
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
        return server.receive_unmask(unmasks)

    def _aggregate(
        self,
        server_round: int,
        arrays: ArrayRecord,
        result: AggregateResult,
        nodes: list[int],
        run: StageExchange,
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Hand the unmasked mean to the wrapped strategy as one reply weighted by the total
        weight: FedAvg's weighted mean of it is itself, and FedOpt-style strategies apply
        their server optimizer to it."""
        layout = ArrayLayout.of(arrays)
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
            for key, value in clear_metrics(run.metrics, self.weighted_by_key).items():
                if key != self.weighted_by_key:
                    metrics[key] = value
        synthetic = Message(
            content=RecordDict({self.arrayrecord_key: new_arrays, "metrics": metrics}),
            dst_node_id=0,
            message_type=MessageType.TRAIN,
        )
        return self.strategy.aggregate_train(server_round, [synthetic])
