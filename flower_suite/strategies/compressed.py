"""Compressed updates around any Message-API strategy (ATOMO and its special cases).

Dissertation chapter 3 (ATOMO: atomic sparsification of the update, unbiased and
variance-optimal for a budget of atoms; QSGD and TernGrad as special cases), spec ``atomo.md``.
Clients run :func:`~flower_suite.clients.compression_mod.make_compression_mod`: each train reply
carries, instead of the ``"arrays"`` model, one codec message per tensor under
``"compressed-update"``. :class:`Compressed` decodes every reply strictly against the layout of
the arrays the round's instructions carried (names, shapes, dtypes), rebuilds
``received + update`` (integer buffers: the value sent) as an ordinary ``"arrays"`` reply, and
hands those to the wrapped strategy's ``aggregate_train``, so compression composes with every
rule (FedAvg, the robust rules, the defenses, Flower's own strategies, server optimizers).

A reply whose payload is missing, malformed, truncated, oversized (a message longer than
``max_message_factor`` times the tensor's uncompressed size, checked before any decoding) or
undecodable is excluded with a logged reason and counted (``compression-rejected-replies``);
the wrapped strategy never sees it, and nothing a client sends makes a round raise. Error
replies are passed through unchanged (the wrapped strategy's validator excludes them). Bytes
are measured on the server from the payloads (``compression-bytes-up``, the codec bytes of the
decoded replies; ``compression-bytes-dense``, what the same replies' arrays weigh uncompressed).

The server cannot decode a masked sum of codes, so compression and secure aggregation do not
combine: the wrapper declares ``secure_aggregation=False``, hence ``SecAggPlus(Compressed(...))``
is refused, and wrapping a strategy with its own round structure (SecAggPlus, FedMA) is refused
here.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from flower_suite.compression import (
    COMPRESSORS,
    CodecError,
    Compressor,
    TensorLayout,
    dense_message_bytes,
)
from flower_suite.compression.wire_format import header_bytes
from flower_suite.strategies.contract import Capabilities, ExperimentSizes, capabilities_of
from flower_suite.wire.array import ReplyError
from flower_suite.wire.keys import BYTES_METRIC, COMPRESSED_KEY, PAYLOAD_STYPE

__all__ = ["Compressed", "CompressionRoundRecord", "SentModel"]


@dataclass
class CompressionRoundRecord:
    """What the decoding did in one round (node ids, bytes as measured on the server)."""

    received: int = 0
    decoded: list[int] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    bytes_up: int = 0  # codec bytes of the decoded replies
    dense_bytes: int = 0  # raw bytes of the same replies' arrays, uncompressed
    decode_s: float = 0.0


@dataclass(frozen=True)
class SentModel:
    """The arrays a round's instructions carried, as the decoder needs them."""

    tensors: dict[str, torch.Tensor]
    layouts: dict[str, TensorLayout]
    max_bytes: dict[str, int]  # the longest message accepted per tensor
    dense_bytes: int

    @classmethod
    def of(cls, arrays: ArrayRecord, max_message_factor: float) -> SentModel:
        tensors = {k: torch.from_numpy(np.array(a.numpy(), copy=True)) for k, a in arrays.items()}
        layouts = {k: TensorLayout(tuple(t.shape), t.dtype) for k, t in tensors.items()}
        max_bytes = {}
        for name, (shape, dtype) in layouts.items():
            # at least 4 bytes per entry: the codec sends its reals as float32 whatever the dtype
            reference = max(
                dense_message_bytes(shape, dtype),
                header_bytes(len(shape)) + 4 * int(np.prod(shape)),
            )
            max_bytes[name] = int(max_message_factor * reference) + 16
        dense = sum(t.numel() * t.element_size() for t in tensors.values())
        return cls(tensors, layouts, max_bytes, dense)


def _payload(record: ArrayRecord, sent: SentModel) -> dict[str, bytes]:
    """The codec messages of a payload record, checked before a byte is decoded."""
    if set(record.keys()) != set(sent.layouts):
        missing = sorted(set(sent.layouts) - set(record.keys()))
        extra = sorted(set(record.keys()) - set(sent.layouts))
        raise ReplyError(f"payload names differ from the model: missing {missing}, extra {extra}")
    payload = {}
    for name in sent.layouts:
        array = record[name]
        if not isinstance(array, Array) or array.stype != PAYLOAD_STYPE or array.dtype != "uint8":
            raise ReplyError(f"payload {name!r} is not a {PAYLOAD_STYPE} uint8 Array")
        data = array.data
        if not isinstance(data, bytes) or tuple(array.shape) != (len(data),):
            raise ReplyError(
                f"payload {name!r}: shape {tuple(array.shape)} does not match its data"
            )
        if len(data) > sent.max_bytes[name]:
            raise ReplyError(
                f"payload {name!r} is oversized: {len(data)} bytes, at most "
                f"{sent.max_bytes[name]} accepted"
            )
        payload[name] = data
    return payload


def _rebuilt_content(msg: Message, arrays: ArrayRecord, arrayrecord_key: str) -> RecordDict:
    """The reply's records with the payload replaced by ``arrays`` (and the client's byte
    claim left out: the server measures bytes itself)."""
    content = RecordDict()
    content[arrayrecord_key] = arrays
    for name, metrics in msg.content.metric_records.items():
        content[name] = MetricRecord({k: v for k, v in metrics.items() if k != BYTES_METRIC})
    for name, config in msg.content.config_records.items():
        content[name] = config
    return content


class Compressed(Strategy):
    """Decode compressed client updates, then aggregate with ``strategy`` (dissertation ch. 3).

    Parameters
    ----------
    strategy : Strategy
        Any Message-API strategy that aggregates ``train`` replies (FedAvg, FedProx, the robust
        rules, the defenses, Flower's own); not one with its own round structure.
    compressor : str | Compressor (default: "none")
        A :data:`~flower_suite.compression.COMPRESSORS` name (``none``, ``atomo_entrywise``,
        ``atomo_spectral``, ``qsgd``, ``terngrad``, ``lq``) or an instance; the clients' mod
        must send this kind (another kind's messages are excluded as undecodable).
    compressor_kwargs : mapping, optional
        Parameters of a named compressor (``{"budget": 2}``, ``{"bits": 2}``).
    max_message_factor : float (default: 2.0)
        A tensor's message may be at most this multiple of its uncompressed size (4 bytes per
        entry at least); longer ones are refused before decoding. 2 covers the largest message
        any compressor sends (spectral ATOMO at full rank of a square matrix).
    """

    def __init__(
        self,
        strategy: Strategy,
        compressor: str | Compressor = "none",
        *,
        compressor_kwargs: Mapping[str, Any] | None = None,
        max_message_factor: float = 2.0,
    ) -> None:
        if isinstance(strategy, Compressed):
            raise ValueError("strategy is already wrapped in Compressed")
        if capabilities_of(strategy).own_round_structure:
            raise ValueError(
                f"{type(strategy).__name__} runs its own round structure (protocol stages or "
                "layer passes), whose replies are not compressed model updates; compression "
                "wraps a strategy that aggregates plain train replies (and cannot run under "
                "secure aggregation: the server cannot decode a masked sum of codes)"
            )
        if isinstance(compressor, str):
            self.compressor = COMPRESSORS.create(compressor, **dict(compressor_kwargs or {}))
        elif isinstance(compressor, Compressor):
            if compressor_kwargs:
                raise ValueError("compressor_kwargs apply only to a compressor given by name")
            self.compressor = compressor
        else:
            raise TypeError(f"compressor must be a name or a Compressor, not {compressor!r}")
        if isinstance(max_message_factor, bool) or not 1.0 <= max_message_factor < float("inf"):
            raise ValueError(
                f"max_message_factor must be a number >= 1, not {max_message_factor!r}"
            )
        self.strategy = strategy
        self.max_message_factor = float(max_message_factor)
        self.compression_records: dict[int, CompressionRoundRecord] = {}
        self._sent: SentModel | None = None

    @property
    def capabilities(self) -> Capabilities:
        """The wrapped strategy's, except: no secure aggregation (codes cannot be summed under
        masks), and decoding needs the model sent in ``configure_train``."""
        return dataclasses.replace(
            capabilities_of(self.strategy), secure_aggregation=False, needs_sent_model=True
        )

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes this wrapper lacks: hooks read e.g. `records`.
        if name == "strategy":
            raise AttributeError(name)
        return getattr(self.strategy, name)

    @property
    def arrayrecord_key(self) -> str:
        return str(getattr(self.strategy, "arrayrecord_key", "arrays"))

    def min_replies(self) -> int:
        """The wrapped strategy's."""
        return int(getattr(self.strategy, "min_replies", lambda: 1)())

    def check_sizes(self, sizes: ExperimentSizes) -> None:
        """The wrapped strategy's size check."""
        inner = getattr(self.strategy, "check_sizes", None)
        if inner is not None:
            inner(sizes)

    def summary(self) -> None:
        log(
            INFO,
            "\t├── Compressed updates: %s (%s)",
            type(self.compressor).__name__,
            ", ".join(f"{k}={v}" for k, v in vars(self.compressor).items()) or "no parameters",
        )
        self.strategy.summary()

    # -- training rounds ----------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        # Decode against what the instructions carried (a wrapped LowRankWarmup may have
        # factorized ``arrays``); every instruction of a round carries the same model.
        sent = next(
            (
                m.content.array_records[self.arrayrecord_key]
                for m in messages
                if self.arrayrecord_key in m.content.array_records
            ),
            arrays,
        )
        self._sent = SentModel.of(sent, self.max_message_factor)
        return messages

    def decode_reply(self, msg: Message, sent: SentModel) -> tuple[Message, int]:
        """``received + update`` as a plain reply, and the payload's codec bytes. Raises
        :class:`ReplyError` or :class:`CodecError` (both ``ValueError``)."""
        records = msg.content.array_records
        if len(records) != 1 or COMPRESSED_KEY not in records:
            raise ReplyError(f"expected exactly one ArrayRecord, under {COMPRESSED_KEY!r}")
        payload = _payload(records[COMPRESSED_KEY], sent)
        decoded = self.compressor.decompress(payload, sent.layouts)
        arrays = {}
        for name, base in sent.tensors.items():
            value = decoded[name]
            if base.is_floating_point():
                value = base + value
                if not bool(torch.isfinite(value).all()):
                    raise ReplyError(f"array {name!r}: received + update is not finite")
            arrays[name] = Array(np.array(value.numpy(), copy=True))
        content = _rebuilt_content(msg, ArrayRecord(arrays), self.arrayrecord_key)
        rebuilt = copy.copy(msg)  # same metadata (sender, reply-to), new content
        rebuilt.content = content
        return rebuilt, self.compressor.payload_bytes(payload)

    def _decode_all(
        self, server_round: int, replies: list[Message], sent: SentModel
    ) -> tuple[list[Message], CompressionRoundRecord]:
        record = self.compression_records[server_round] = CompressionRoundRecord()
        record.received = len(replies)
        start = time.perf_counter()
        plain = []
        for msg in replies:
            node = int(getattr(msg.metadata, "src_node_id", -1))
            if msg.has_error():
                plain.append(msg)  # the wrapped strategy's validator excludes it
                continue
            try:
                rebuilt, size = self.decode_reply(msg, sent)
            except (ReplyError, CodecError, ValueError, TypeError) as err:
                record.rejected.append((node, str(err)))
                log(WARNING, "Compressed: excluded reply from node %d: %s", node, err)
                continue
            plain.append(rebuilt)
            record.decoded.append(node)
            record.bytes_up += size
            record.dense_bytes += sent.dense_bytes
        record.decode_s = time.perf_counter() - start
        return plain, record

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self._sent is None:
            raise RuntimeError(
                "Compressed: aggregate_train needs the model sent in configure_train (the "
                "updates are decoded against it); call configure_train first"
            )
        plain, record = self._decode_all(server_round, list(replies), self._sent)
        arrays, metrics = self.strategy.aggregate_train(server_round, plain)
        metrics = MetricRecord() if metrics is None else metrics
        metrics["compression-rejected-replies"] = len(record.rejected)
        metrics["compression-bytes-up"] = record.bytes_up
        metrics["compression-bytes-dense"] = record.dense_bytes
        if record.bytes_up > 0:
            metrics["compression-ratio"] = record.dense_bytes / record.bytes_up
        return arrays, metrics

    # -- evaluation: uncompressed, the wrapped strategy's ---------------------------------------
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)
