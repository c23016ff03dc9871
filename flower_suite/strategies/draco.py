"""DRACO (Chen et al., ICML 2018; dissertation chapter 6) as a Flower Message-API strategy.

A thin adapter over :mod:`flower_suite.coding`: the server owns ``P`` data partitions and
assigns each node ``j`` (the nodes sorted by node id, so never by arrival order) the
``2s + 1`` partitions ``S_j`` of the chosen code, with their encoding coefficients
(``train.draco`` instructions, :mod:`flower_suite.clients.draco_client`). Each node returns the
coded message ``z_j = sum_k W[k, j] x_k`` of its per-partition vectors
``x_k = [n_k v_k, n_k]``; the decoder recovers the *exact* sum ``sum_k x_k`` whenever at most
``s`` nodes are adversarial, missing, failed or malformed (Definition 6.3, Theorems 6.7 and
6.10), and the global model moves by ``sum_k n_k v_k / sum_k n_k`` (in ``gradient`` mode one
SGD step with the full batch, in ``update`` mode the size-weighted mean of per-partition local
updates, spec section 7).

- ``code = "repetition"``: groups of ``r = 2s + 1`` nodes, majority vote per group (section
  6.2, Theorem 6.7); the decoded aggregate is bit for bit the adversary-free one.
- ``code = "cyclic"``: circular allocation, complex messages, Fourier locator (Theorem 6.10);
  exact up to float64 rounding, ``P <= 31``.

Replies are screened first (:func:`flower_suite.coding.stack_replies`): a missing reply, an
error reply, a duplicate, a wrong shape or dtype, NaN/Inf entries all become erasures that
count toward ``s``. Beyond ``s`` the decoder raises a
:class:`~flower_suite.coding.DecodingError` and the round is **skipped** with a logged
reason: the global model stays as it was, never corrupted. Located adversaries are logged
and reported (``self.records``, train metrics ``draco-located``, ``draco-decode-s``).

DRACO needs the server to decide which data each node computes on, and every node to answer
every round: **simulation or cross-silo only** (replicated data), never private cross-device
data (spec draco.md section 7, as the dissertation notes). Its contract declares
``server_assigned_data``, ``full_participation`` and ``simulation_only``; configs that sample
fewer than all clients, or whose sizes do not fit the code, are refused before the run
(:meth:`Draco.check_sizes`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from flower_suite.coding import (
    CyclicCode,
    DecodingError,
    RepetitionCode,
    decode_cyclic,
    decode_repetition,
    make_cyclic_code,
    make_repetition_code,
)
from flower_suite.coding.cyclic import MAX_CYCLIC_NODES
from flower_suite.flower_compat import sample_nodes
from flower_suite.strategies.contract import Capabilities, ContractError, ExperimentSizes
from flower_suite.strategies.draco_replies import collect_messages
from flower_suite.strategies.robust import MetricsAggr
from flower_suite.wire.keys import (
    DRACO_COEF_IMAG,
    DRACO_COEF_REAL,
    DRACO_COMPLEX,
    DRACO_FLOAT64,
    DRACO_INDEX,
    DRACO_MODE,
    DRACO_SHARDS,
    DRACO_TRAIN,
)
from flower_suite.wire.updates import apply_update, float_keys

CODES = ("repetition", "cyclic")
MODES = ("update", "gradient")


@dataclass
class DracoRoundRecord:
    """One DRACO round: who was located (node ids and indices), why replies were erased, the
    decode time, and the skip reason when the round could not be decoded. ``received``,
    ``selected`` (nodes not located), ``rejected`` (located, with a reason) and ``skipped`` are
    the names the runner's selection hooks read from every strategy's records."""

    received: list[int] = field(default_factory=list)
    selected: list[int] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    located: list[int] = field(default_factory=list)
    located_indices: list[int] = field(default_factory=list)
    erased: dict[int, str] = field(default_factory=dict)
    decode_s: float = 0.0
    num_examples: float = 0.0
    skipped: str = ""
    info: dict[str, float] = field(default_factory=dict)


class Draco(FedAvg):
    """DRACO with the repetition or cyclic code, tolerating ``max_adversaries`` nodes.

    Parameters (FedAvg's in FedAvg's order, then keyword-only)
    ----------------------------------------------------------
    fraction_train, min_train_nodes
        Ignored for sampling: every node trains every round (``full_participation``).
    min_available_nodes : int, default 2
        The round waits for this many nodes; ``P`` is the number of nodes connected at the
        first round (the runner sets it to ``num_clients``).
    code : str, default "repetition"
        ``"repetition"`` (``P`` a multiple of ``2s + 1``) or ``"cyclic"`` (``P <= 31``).
    max_adversaries : int, default 1
        ``s``, the adversarial, failed or missing nodes tolerated; ``P >= 2s + 1``.
    mode : str, default "update"
        ``"update"``: per-partition local training deltas; ``"gradient"``: one full-batch
        gradient step per round (the text's iteration).
    float64 : bool, default True
        Clients compute in float64 (deterministic, bitwise-identical replicas).
    vote_tolerance : float | None, default None
        Repetition code: None votes on exact bits (spec section 3); a float ``rtol`` accepts
        replicas that agree to that relative tolerance (nondeterministic back-ends).
    max_norm : float | None, default None
        Messages with a larger norm are erased before decoding (count toward ``s``).
    """

    capabilities = Capabilities(
        needs_sent_model=True,
        server_assigned_data=True,
        full_participation=True,
        simulation_only=True,
    )

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
        code: str = "repetition",
        max_adversaries: int = 1,
        mode: str = "update",
        float64: bool = True,
        vote_tolerance: float | None = None,
        max_norm: float | None = None,
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
        if code not in CODES:
            raise ValueError(f"Draco: code must be one of {CODES}, not {code!r}")
        if mode not in MODES:
            raise ValueError(f"Draco: mode must be one of {MODES}, not {mode!r}")
        if isinstance(max_adversaries, bool) or not isinstance(max_adversaries, int):
            raise TypeError(f"Draco: max_adversaries must be an int, not {max_adversaries!r}")
        if max_adversaries < 0:
            raise ValueError(f"Draco: max_adversaries must be >= 0, not {max_adversaries}")
        if vote_tolerance is not None and not (
            math.isfinite(vote_tolerance) and vote_tolerance >= 0
        ):
            raise ValueError(f"Draco: vote_tolerance must be finite and >= 0, not {vote_tolerance}")
        if max_norm is not None and not (math.isfinite(max_norm) and max_norm > 0):
            raise ValueError(f"Draco: max_norm must be finite and > 0, not {max_norm}")
        self.code_name, self.mode, self.float64 = code, mode, bool(float64)
        self.max_adversaries = max_adversaries
        self.vote_tolerance, self.max_norm = vote_tolerance, max_norm
        self.code: RepetitionCode | CyclicCode | None = None
        self.index: dict[int, int] = {}  # node id -> node index j
        self.records: dict[int, DracoRoundRecord] = {}
        self._global: ArrayRecord | None = None

    # -- contract -------------------------------------------------------------------------
    def min_replies(self) -> int:
        """At least ``2s + 1`` nodes (Theorem 6.5); ``P - s`` valid replies per round."""
        return 2 * self.max_adversaries + 1

    def check_sizes(self, sizes: ExperimentSizes) -> None:
        """Every node every round, and ``P`` fitting the code (before the run)."""
        p, s = sizes.num_clients, self.max_adversaries
        if sizes.clients_per_round < p:
            raise ContractError(
                "clients_per_round",
                f"DRACO needs every node every round (a missing one counts as an adversary); "
                f"sample all {p}, not {sizes.clients_per_round}",
            )
        if p < 2 * s + 1:
            raise ContractError(
                "strategy.max_adversaries",
                f"DRACO tolerates at most (P - 1)/2 adversaries (Theorem 6.5); "
                f"s={s} needs at least {2 * s + 1} clients, got {p}",
            )
        if self.code_name == "repetition" and p % (2 * s + 1):
            raise ContractError(
                "num_clients",
                f"the repetition code needs a multiple of r = 2s + 1 = {2 * s + 1} clients, "
                f"not {p}",
            )
        if self.code_name == "cyclic" and p > MAX_CYCLIC_NODES:
            raise ContractError(
                "num_clients",
                f"the float64 cyclic code is exact only up to {MAX_CYCLIC_NODES} clients, not "
                f"{p}; use code = 'repetition'",
            )

    def summary(self) -> None:
        super().summary()
        log(
            INFO,
            "\t├── DRACO: %s code, s=%d, mode=%s, float64=%s (simulation / cross-silo only)",
            self.code_name,
            self.max_adversaries,
            self.mode,
            self.float64,
        )

    # -- rounds ---------------------------------------------------------------------------
    def _setup(self, node_ids: Sequence[int]) -> None:
        nodes = sorted(node_ids)
        p, s = len(nodes), self.max_adversaries
        self.check_sizes(ExperimentSizes(num_clients=p, clients_per_round=p))
        if self.code_name == "cyclic":
            self.code = make_cyclic_code(p, s)
        else:
            self.code = make_repetition_code(p, s)
        self.index = {node: j for j, node in enumerate(nodes)}
        log(INFO, "DRACO: %s code over %d nodes, s=%d, r=%d", self.code_name, p, s, 2 * s + 1)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """A ``train.draco`` instruction to every node: its index, shards and coefficients."""
        self._global = arrays
        all_nodes = list(grid.get_node_ids())
        node_ids, _ = sample_nodes(grid, self.min_available_nodes, len(all_nodes))
        if self.code is None:
            self._setup(node_ids)
        assert self.code is not None
        messages = []
        for node in node_ids:
            j = self.index.get(node)
            if j is None:
                log(WARNING, "DRACO: node %d joined after the code was built; not used", node)
                continue
            pairs = self.code.coefficients(j)
            node_config = ConfigRecord(
                {
                    **config,
                    "server-round": server_round,
                    DRACO_INDEX: j,
                    DRACO_SHARDS: [k for k, _ in pairs],
                    DRACO_COEF_REAL: [float(c.real) for _, c in pairs],
                    DRACO_COEF_IMAG: [float(c.imag) for _, c in pairs],
                    DRACO_COMPLEX: self.code_name == "cyclic",
                    DRACO_MODE: self.mode,
                    DRACO_FLOAT64: self.float64,
                }
            )
            content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: node_config})
            messages.append(Message(content=content, message_type=DRACO_TRAIN, dst_node_id=node))
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen, decode, apply ``sum n_k v_k / sum n_k``; skip the round on a DecodingError."""
        replies = list(replies)
        record = self.records.setdefault(server_round, DracoRoundRecord())
        record.received = [int(msg.metadata.src_node_id) for msg in replies]
        if self.code is None or self._global is None:
            self._skip(server_round, record, "no train.draco round was configured")
            return None, None
        keys = float_keys(self._global)
        dimension = sum(int(np.prod(self._global[k].shape)) for k in keys) + 1
        cyclic = isinstance(self.code, CyclicCode)
        stacked, accepted = collect_messages(
            replies, self.index, dimension=dimension, complex_valued=cyclic
        )
        record.erased = {self._node_of(j): reason for j, reason in stacked.reasons.items()}
        start = time.perf_counter()
        try:
            decoded = self._decode(stacked.messages, stacked.erased)
        except DecodingError as err:
            record.decode_s = time.perf_counter() - start
            record.info.update({"draco-skipped": 1.0, "draco-decode-s": record.decode_s})
            self._skip(server_round, record, f"decoding failed: {err}")
            return None, MetricRecord({"draco-skipped": 1, "draco-decode-s": record.decode_s})
        record.decode_s = time.perf_counter() - start
        total, located, screened = decoded
        for j, reason in screened.items():
            record.erased.setdefault(self._node_of(j), reason)
        record.located_indices = list(located)
        record.located = [self._node_of(j) for j in located]
        record.selected = [n for n in sorted(self.index) if n not in set(record.located)]
        record.rejected = [
            (n, record.erased.get(n, "disagreed with the code")) for n in record.located
        ]
        if record.located:
            log(
                WARNING,
                "DRACO: round %d located %d adversarial/failed nodes %s (indices %s): %s",
                server_round,
                len(located),
                record.located,
                record.located_indices,
                dict(record.rejected),
            )
        record.info.update(
            {"draco-located": float(len(located)), "draco-decode-s": record.decode_s}
        )
        arrays = self._apply(server_round, record, total, keys)
        if arrays is None:
            return None, MetricRecord({"draco-skipped": 1, "draco-decode-s": record.decode_s})
        honest = [msg for j, msg in accepted.items() if j not in set(located)]
        return arrays, self._metrics(honest, record)

    # -- helpers --------------------------------------------------------------------------
    def _decode(
        self, messages: np.ndarray, erased: Sequence[int]
    ) -> tuple[np.ndarray, tuple[int, ...], Mapping[int, str]]:
        """The decoded sum, the located indices and the decoder's own screening reasons
        (norm bounds) by index."""
        if isinstance(self.code, CyclicCode):
            cyc = decode_cyclic(self.code, messages, erased=erased, max_norm=self.max_norm)
            return cyc.total, cyc.located, cyc.screening.reasons
        assert isinstance(self.code, RepetitionCode)
        rep = decode_repetition(
            self.code,
            messages,
            erased=erased,
            max_norm=self.max_norm,
            tolerance=self.vote_tolerance,
        )
        return rep.total, rep.located, rep.screening.reasons

    def _apply(
        self, server_round: int, record: DracoRoundRecord, total: np.ndarray, keys: list[str]
    ) -> ArrayRecord | None:
        """``w + sum n_k v_k / sum n_k`` from the decoded sum, or None (skipped) if unusable."""
        assert self._global is not None
        count = float(total[-1])
        record.num_examples = count
        if not (math.isfinite(count) and count >= 0.5):
            self._skip(server_round, record, f"decoded example count {count} is not positive")
            return None
        step = total[:-1] / count
        if not np.isfinite(step).all():
            self._skip(server_round, record, "the decoded aggregate is not finite")
            return None
        arrays = apply_update(self._global, self._global, keys, step)
        if not all(np.isfinite(arrays[k].numpy()).all() for k in keys):
            self._skip(server_round, record, "the new global model is not finite")
            return None
        return arrays

    def _metrics(self, honest: list[Message], record: DracoRoundRecord) -> MetricRecord:
        contents = [
            RecordDict({"metrics": next(iter(msg.content.metric_records.values()))})
            for msg in honest
            if msg.content.metric_records
        ]
        try:
            metrics = (
                self.train_metrics_aggr_fn(contents, self.weighted_by_key)
                if contents
                else MetricRecord()
            )
        except (ValueError, TypeError, KeyError, ArithmeticError) as err:
            log(WARNING, "DRACO: client metrics not aggregated: %s", err)
            metrics = MetricRecord()
        for key in [k for k, v in metrics.items() if not _finite(v)]:
            del metrics[key]
        metrics["draco-located"] = len(record.located)
        metrics["draco-decode-s"] = record.decode_s
        metrics["draco-skipped"] = 0
        return metrics

    def _node_of(self, index: int) -> int:
        return next((node for node, j in self.index.items() if j == index), -1)

    def _skip(self, server_round: int, record: DracoRoundRecord, reason: str) -> None:
        record.skipped = reason
        log(WARNING, "DRACO: round %d skipped, global model unchanged: %s", server_round, reason)


def _finite(value: object) -> bool:
    values = value if isinstance(value, list) else [value]
    return all(isinstance(v, int) or (isinstance(v, float) and math.isfinite(v)) for v in values)
