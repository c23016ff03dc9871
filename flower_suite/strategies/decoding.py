"""The one reply validator: every strategy that reads client replies decodes them here.

A reply is a claim by a client. Each is checked on its own, before anything is read, and either
decoded whole into its row of one preallocated ``(n, d)`` update buffer or excluded with a
reason; one bad reply never costs the others, and no row is ever partially filled:

- structure: no error, exactly one ArrayRecord under ``arrayrecord_key``, exactly one
  MetricRecord holding a finite positive number under ``weighted_by_key``; a node id already
  seen this round is excluded after its first reply;
- arrays: the same *set* of names as the global model (any order), each with ``stype``
  ``numpy.ndarray`` and the global model's shape and dtype in its metadata *and* in its
  ``.npy`` header, and exactly that many bytes (:func:`flower_suite.wire.read_npy`);
- values: finite;
- weights: screened as a set (:func:`flower_suite.aggregation.weights.screen_weights`).

Arrays are read with ``np.frombuffer`` (no ``np.load`` round trip, no per-reply ``gc.collect``)
and copied once into their row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from logging import WARNING

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message
from flwr.common import log

from flower_suite.aggregation.weights import screen_weights
from flower_suite.wire.array import NPY_STYPE, ReplyError, read_array

__all__ = [
    "NPY_STYPE",
    "ArrayLayout",
    "DecodedReplies",
    "ReplyError",
    "decode_replies",
    "node_ids_of",
    "read_array",
    "reply_arrays",
    "reply_weight",
    "screen_messages",
]


@dataclass(frozen=True)
class ArrayLayout:
    """Where each named array of a model lives in the flat parameter vector."""

    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]
    offsets: tuple[int, ...]
    size: int

    @classmethod
    def of(cls, record: ArrayRecord) -> ArrayLayout:
        keys, shapes, dtypes, offsets, total = [], [], [], [], 0
        for key, array in record.items():
            keys.append(key)
            shapes.append(tuple(array.shape))
            dtypes.append(np.dtype(array.dtype))
            offsets.append(total)
            total += int(np.prod(array.shape, dtype=np.int64))
        return cls(tuple(keys), tuple(shapes), tuple(dtypes), tuple(offsets), total)

    @property
    def buffer_dtype(self) -> np.dtype:
        """float64 if any array is float64, else float32 (integers are aggregated as floats)."""
        return np.dtype(np.float64) if np.dtype(np.float64) in self.dtypes else np.dtype(np.float32)

    def flatten(self, record: ArrayRecord, out: np.ndarray | None = None) -> np.ndarray:
        """The record's arrays concatenated in layout order, each read strictly.

        The record must hold exactly the layout's names (in any order). Raises
        :class:`ReplyError` before writing anything into ``out`` if it does not; a bad array
        found later leaves ``out`` partly written, so callers discard ``out`` on error.
        """
        if set(record.keys()) != set(self.keys):
            missing = sorted(set(self.keys) - set(record.keys()))
            extra = sorted(set(record.keys()) - set(self.keys))
            raise ReplyError(
                f"array names differ from the global model: missing {missing}, extra {extra}"
            )
        out = np.empty(self.size, self.buffer_dtype) if out is None else out
        for key, shape, dtype, offset in zip(
            self.keys, self.shapes, self.dtypes, self.offsets, strict=True
        ):
            try:
                values = read_array(record[key], shape=shape, dtype=dtype)
            except ReplyError as err:
                raise ReplyError(f"array {key!r}: {err}") from None
            out[offset : offset + values.size] = values.reshape(-1)
        return out

    def unflatten(self, flat: np.ndarray) -> ArrayRecord:
        """A flat vector back to named arrays of the original shapes (0-d included) and dtypes.

        Raises ``ValueError`` when an integer array's values do not fit its dtype (a cast
        would silently wrap them)."""
        arrays = {}
        for key, offset, shape, dtype in zip(
            self.keys, self.offsets, self.shapes, self.dtypes, strict=True
        ):
            size = int(np.prod(shape, dtype=np.int64))
            chunk = flat[offset : offset + size].reshape(shape)
            if not np.issubdtype(dtype, np.floating):
                chunk = np.rint(chunk)  # integer buffers (e.g. BatchNorm step counts)
                info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
                if (
                    info is not None
                    and chunk.size
                    and not (info.min <= chunk.min() and chunk.max() <= info.max)
                ):
                    raise ValueError(f"aggregate of {key!r} does not fit {dtype}")
            # np.array keeps 0-d arrays 0-d; np.ascontiguousarray would make them shape (1,).
            arrays[key] = Array(np.array(chunk, dtype=dtype, order="C"))
        return ArrayRecord(arrays)


@dataclass
class DecodedReplies:
    """Updates of the accepted replies, their weights and node ids, and what was rejected."""

    updates: torch.Tensor  # (n, d): reply - reference, in the layout's buffer dtype
    weights: torch.Tensor  # (n,) float64, screened, summing to 1
    node_ids: list[int]
    accepted: list[Message]
    rejected: list[tuple[int, str]] = field(default_factory=list)
    capped: list[int] = field(default_factory=list)  # node ids whose weight was capped


def node_ids_of(replies: Sequence[Message]) -> list[int]:
    """Each reply's source node id.

    Flower always sets an integer ``src_node_id``; a reply without one (the mock replies of
    Flower's own strategy unit tests) is identified by its position instead, as -1, -2, ...,
    which no real node id can be.
    """
    ids = []
    for position, msg in enumerate(replies):
        node = getattr(getattr(msg, "metadata", None), "src_node_id", None)
        valid = isinstance(node, int | np.integer) and not isinstance(node, bool)
        ids.append(int(node) if valid else -(position + 1))  # type: ignore[arg-type]
    return ids


def screen_messages(
    replies: Sequence[Message],
) -> tuple[list[tuple[int, Message]], list[tuple[int, str]]]:
    """(node id, reply) for replies without an error, at most one per node id (the first);
    the others with the reason they were dropped."""
    kept, rejected, seen = [], [], set()
    for node, msg in zip(node_ids_of(replies), replies, strict=True):
        if msg.has_error():
            rejected.append((node, f"error reply: {msg.error.reason}"))
        elif node in seen:
            rejected.append((node, "duplicate reply from the same node id this round"))
        else:
            seen.add(node)
            kept.append((node, msg))
    return kept, rejected


def reply_weight(msg: Message, weighted_by_key: str) -> float:
    """The reply's finite, positive ``weighted_by_key`` metric. Raises :class:`ReplyError`."""
    records = msg.content.metric_records
    if len(records) != 1:
        raise ReplyError(f"expected exactly one MetricRecord, found {len(records)}")
    weight = next(iter(records.values())).get(weighted_by_key)
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise ReplyError(f"metric {weighted_by_key!r} missing or not a number")
    if not np.isfinite(weight) or weight <= 0:
        raise ReplyError(f"metric {weighted_by_key!r} is {weight}, expected a finite value > 0")
    return float(weight)


def reply_arrays(msg: Message, arrayrecord_key: str) -> ArrayRecord:
    """The reply's single ArrayRecord, which must sit under ``arrayrecord_key``."""
    records = msg.content.array_records
    if len(records) != 1 or arrayrecord_key not in records:
        raise ReplyError(f"expected exactly one ArrayRecord under {arrayrecord_key!r}")
    return records[arrayrecord_key]


def _all_finite(row: np.ndarray) -> bool:
    """Whether every entry is finite. A finite sum proves it in one pass (NaN and Inf
    propagate); only a non-finite sum (possibly mere overflow) needs the elementwise test."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is what the test looks for
        total = row.sum()
    return bool(np.isfinite(total)) or bool(np.isfinite(row).all())


def decode_replies(
    replies: Sequence[Message],
    reference: np.ndarray | None,
    layout: ArrayLayout,
    *,
    arrayrecord_key: str = "arrays",
    weighted_by_key: str = "num-examples",
    weight_cap: float | None = None,
) -> DecodedReplies:
    """Validate and decode ``replies`` into one (n, d) tensor of ``reply - reference``.

    ``reference`` is the flat global model the replies were trained from (None: raw models).
    ``weight_cap``: a reply's weight is capped at this multiple of the round's median weight
    (None: no cap). Error replies and repeated node ids are excluded too.
    """
    messages, rejected = screen_messages(replies)
    buffer = np.empty((len(messages), layout.size), dtype=layout.buffer_dtype)
    rows, raw_weights, node_ids, accepted = 0, [], [], []
    for node, msg in messages:
        try:
            weight = reply_weight(msg, weighted_by_key)
            row = layout.flatten(reply_arrays(msg, arrayrecord_key), out=buffer[rows])
            if reference is not None:
                np.subtract(row, reference, out=row)
            # NaN/Inf in the reply survive the subtraction, and finite values whose difference
            # overflows become Inf: one check covers both.
            if not _all_finite(row):
                raise ReplyError("update contains NaN or Inf (or overflows the buffer dtype)")
        except ReplyError as err:
            rejected.append((node, str(err)))
            continue  # the next reply overwrites this row
        raw_weights.append(weight)
        node_ids.append(node)
        accepted.append(msg)
        rows += 1
    screened = screen_weights(raw_weights, cap=weight_cap)
    capped = [node_ids[i] for i in screened.capped]
    for node in capped:
        log(WARNING, "weight of node %d capped at %s x the median weight", node, weight_cap)
    return DecodedReplies(
        updates=torch.from_numpy(buffer[:rows]),
        weights=torch.from_numpy(screened.weights),
        node_ids=node_ids,
        accepted=accepted,
        rejected=rejected,
        capped=capped,
    )
