"""Decode client replies once, straight into one preallocated (n, d) update buffer.

Every array of every reply is read from its ``.npy`` bytes with ``np.frombuffer`` (no
``np.load`` round trip, no per-reply ``gc.collect()``) and copied once into its row. Each
reply is validated on its own: a reply with missing or extra arrays, wrong shapes, a dtype
other than the global model's, NaN/Inf values or a bad weight is excluded with a reason, and
never poisons the others.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message

_NPY = "numpy.ndarray"


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
        """The record's arrays concatenated in layout order (validated by the caller)."""
        out = np.empty(self.size, self.buffer_dtype) if out is None else out
        for key, offset in zip(self.keys, self.offsets, strict=True):
            values = array_values(record[key])
            out[offset : offset + values.size] = values.reshape(-1)
        return out

    def unflatten(self, flat: np.ndarray) -> ArrayRecord:
        """A flat vector back to named arrays of the original shapes and dtypes."""
        arrays = {}
        for key, offset, shape, dtype in zip(
            self.keys, self.offsets, self.shapes, self.dtypes, strict=True
        ):
            size = int(np.prod(shape, dtype=np.int64))
            chunk = flat[offset : offset + size].reshape(shape)
            if not np.issubdtype(dtype, np.floating):
                chunk = np.rint(chunk)  # integer buffers (e.g. BatchNorm step counts)
            arrays[key] = Array(np.ascontiguousarray(chunk, dtype=dtype))
        return ArrayRecord(arrays)


def array_values(array: Array) -> np.ndarray:
    """A read-only view of the array's values, parsed from its ``.npy`` bytes without a copy."""
    if array.stype != _NPY:
        return array.numpy()
    stream = io.BytesIO(array.data)
    major, _ = np.lib.format.read_magic(stream)
    read_header = (
        np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    )
    shape, fortran, dtype = read_header(stream)
    count = int(np.prod(shape, dtype=np.int64))
    values = np.frombuffer(array.data, dtype=dtype, count=count, offset=stream.tell())
    return values.reshape(shape, order="F" if fortran else "C")


@dataclass
class DecodedReplies:
    """Updates of the accepted replies, their weights and node ids, and what was rejected."""

    updates: torch.Tensor  # (n, d): reply - global, in the layout's buffer dtype
    weights: torch.Tensor  # (n,) float64
    node_ids: list[int]
    accepted: list[Message]
    rejected: list[tuple[int, str]] = field(default_factory=list)


def _check_reply(
    msg: Message, layout: ArrayLayout, arrayrecord_key: str, weighted_by_key: str
) -> str | None:
    """Why the reply cannot be aggregated, or None if it can."""
    content = msg.content
    if len(content.array_records) != 1 or arrayrecord_key not in content.array_records:
        return f"expected exactly one ArrayRecord under {arrayrecord_key!r}"
    if len(content.metric_records) != 1:
        return "expected exactly one MetricRecord"
    record = content.array_records[arrayrecord_key]
    if tuple(record.keys()) != layout.keys:
        missing = sorted(set(layout.keys) - set(record.keys()))
        extra = sorted(set(record.keys()) - set(layout.keys))
        return f"array names differ from the global model (missing {missing}, extra {extra})"
    for key, shape, dtype in zip(layout.keys, layout.shapes, layout.dtypes, strict=True):
        array = record[key]
        if tuple(array.shape) != shape:
            return f"array {key!r} has shape {tuple(array.shape)}, expected {shape}"
        if np.dtype(array.dtype) != dtype:
            return f"array {key!r} has dtype {array.dtype}, expected {dtype}"
    metrics = next(iter(content.metric_records.values()))
    weight = metrics.get(weighted_by_key)
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        return f"metric {weighted_by_key!r} missing or not a number"
    if not np.isfinite(weight) or weight <= 0:
        return f"metric {weighted_by_key!r} is {weight}, expected a finite value > 0"
    return None


def decode_replies(
    replies: Sequence[Message],
    global_flat: np.ndarray,
    layout: ArrayLayout,
    *,
    arrayrecord_key: str = "arrays",
    weighted_by_key: str = "num-examples",
) -> DecodedReplies:
    """Validate and decode ``replies`` into one (n, d) tensor of updates (reply - global)."""
    buffer = np.empty((len(replies), layout.size), dtype=layout.buffer_dtype)
    rows, weights, node_ids, accepted, rejected = 0, [], [], [], []
    for msg in replies:
        node = int(msg.metadata.src_node_id)
        reason = _check_reply(msg, layout, arrayrecord_key, weighted_by_key)
        if reason is None:
            row = buffer[rows]
            layout.flatten(msg.content.array_records[arrayrecord_key], out=row)
            if not np.isfinite(row).all():
                reason = "update contains NaN or Inf"
        if reason is not None:
            rejected.append((node, reason))
            continue
        np.subtract(row, global_flat, out=row)
        metrics = next(iter(msg.content.metric_records.values()))
        weights.append(float(metrics[weighted_by_key]))
        node_ids.append(node)
        accepted.append(msg)
        rows += 1
    return DecodedReplies(
        updates=torch.from_numpy(buffer[:rows]),
        weights=torch.tensor(weights, dtype=torch.float64),
        node_ids=node_ids,
        accepted=accepted,
        rejected=rejected,
    )
