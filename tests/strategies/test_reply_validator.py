"""The one reply validator (``strategies/decoding.py``): bytes, not metadata, decide.

Each crafted reply below crashed a robust strategy or was silently half-read before the
validator checked the ``.npy`` header and byte count against the global model's layout.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord
from strategy_fixtures import SHAPES, flat, global_arrays, reply

from flower_suite.strategies.decoding import ArrayLayout, ReplyError, decode_replies, read_array
from flower_suite.wire import NpyFormatError, read_npy


def _npy(value: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, value, allow_pickle=False)
    return buffer.getvalue()


def _raw(data: bytes, shape: tuple[int, ...] = (4, 3), dtype: str = "float32") -> Array:
    """An Array whose metadata claims ``shape``/``dtype`` whatever ``data`` holds."""
    return Array(dtype=dtype, shape=shape, stype="numpy.ndarray", data=data)


GOOD_W = np.arange(12, dtype=np.float32).reshape(4, 3)
CRAFTED = {
    "header declares more values": _raw(_npy(np.zeros((5, 3), np.float32))),
    "header declares fewer values": _raw(_npy(np.zeros((3, 3), np.float32))),
    "truncated body": _raw(_npy(GOOD_W)[:-4]),
    "body longer than declared": _raw(_npy(GOOD_W) + b"\0\0\0\0"),
    "bad magic string": _raw(b"\x93NUMPZ" + _npy(GOOD_W)[6:]),
    "header dtype float64 under float32 metadata": _raw(_npy(GOOD_W.astype(np.float64))),
    "big-endian header": _raw(_npy(GOOD_W.astype(">f4"))),
    "object dtype header": _raw(_npy(GOOD_W).replace(b"'<f4'", b"'|O8'", 1)),
    "empty data": _raw(b""),
    "stype torch.Tensor": Array(
        dtype="float32", shape=(4, 3), stype="torch.Tensor", data=_npy(GOOD_W)
    ),
    "metadata dtype unknown": _raw(_npy(GOOD_W), dtype="float33"),
    "metadata shape wrong": _raw(_npy(GOOD_W), shape=(3, 4)),
    "huge header length": _raw(b"\x93NUMPY\x02\x00" + (2**31).to_bytes(4, "little") + b"{}"),
    "header is not a dict": _raw(b"\x93NUMPY\x01\x00\x06\x00[1, 2]" + b"\0" * 48),
    "header with a call": _raw(
        b"\x93NUMPY\x01\x00\x40\x00"
        + b"{'descr': __import__('os'), 'fortran_order': False, 'shape': (4, 3)}"[:64]
        + b"\0" * 48
    ),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_read_array_refuses_crafted_bytes(case: str) -> None:
    with pytest.raises(ReplyError):
        read_array(CRAFTED[case], shape=(4, 3), dtype=np.dtype(np.float32))


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_reply_is_excluded_and_the_others_aggregate(task_identity: None, case: str) -> None:
    """One crafted array costs its reply only; no row is left partially written (the bad
    reply comes first, so its partly filled row must be overwritten by the next reply)."""
    # Prepare
    base = global_arrays()
    layout = ArrayLayout.of(base)
    good = {k: base[k].numpy() + 1.0 for k in SHAPES}
    bad = reply(good, node_id=1)
    bad.content["arrays"] = ArrayRecord({"b": Array(good["b"]), "w": CRAFTED[case]})
    replies = [bad, reply(good, node_id=2), reply(good, node_id=3)]
    # Execute
    batch = decode_replies(replies, flat(base).astype(np.float32), layout)
    # Assert
    assert batch.node_ids == [2, 3]
    assert [node for node, _ in batch.rejected] == [1]
    np.testing.assert_allclose(batch.updates.numpy(), 1.0, rtol=0, atol=1e-6)


def test_fortran_ordered_array_is_read_in_its_true_layout() -> None:
    value = np.asfortranarray(GOOD_W)
    got = read_array(Array(value), shape=(4, 3), dtype=np.dtype(np.float32))
    np.testing.assert_array_equal(got, GOOD_W)
    assert got.flags.c_contiguous


def test_read_npy_returns_a_view_and_keeps_zero_d_shape() -> None:
    data = _npy(np.array(7, dtype=np.int64))
    got = read_npy(data, shape=(), dtype=np.dtype(np.int64))
    assert got.shape == () and int(got) == 7
    with pytest.raises(NpyFormatError, match="shape"):
        read_npy(data, shape=(1,), dtype=np.dtype(np.int64))


def test_array_names_in_another_order_are_accepted(task_identity: None) -> None:
    """Measured: replies with the same names in another order were rejected with 'missing [],
    extra []'. Names are compared as sets and read in the global model's order."""
    base = global_arrays()
    arrays = {k: base[k].numpy() + 0.5 for k in reversed(list(SHAPES))}
    batch = decode_replies(
        [reply(arrays, node_id=5)], flat(base).astype(np.float32), ArrayLayout.of(base)
    )
    assert batch.node_ids == [5] and not batch.rejected
    np.testing.assert_allclose(batch.updates.numpy(), 0.5, atol=1e-6)


def test_missing_and_extra_names_are_named_in_the_reason(task_identity: None) -> None:
    base = global_arrays()
    arrays = {"w": base["w"].numpy(), "c": base["b"].numpy()}
    batch = decode_replies(
        [reply(arrays, node_id=5)], flat(base).astype(np.float32), ArrayLayout.of(base)
    )
    assert batch.rejected == [
        (5, "array names differ from the global model: missing ['b'], extra ['c']")
    ]


def test_second_reply_from_the_same_node_is_excluded(task_identity: None) -> None:
    base = global_arrays()
    first = reply({k: base[k].numpy() + 1 for k in SHAPES}, node_id=9)
    second = reply({k: base[k].numpy() + 100 for k in SHAPES}, node_id=9)
    batch = decode_replies([first, second], flat(base).astype(np.float32), ArrayLayout.of(base))
    assert batch.node_ids == [9]
    assert batch.rejected == [(9, "duplicate reply from the same node id this round")]
    np.testing.assert_allclose(batch.updates.numpy(), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "weight", [0, -3, float("nan"), float("inf"), [1, 2], "12", None], ids=repr
)
def test_invalid_weight_is_excluded(task_identity: None, weight: object) -> None:
    base = global_arrays()
    bad = reply({k: base[k].numpy() for k in SHAPES}, node_id=4)
    bad.content["metrics"] = _metrics_with(weight)
    batch = decode_replies([bad], flat(base).astype(np.float32), ArrayLayout.of(base))
    assert batch.node_ids == [] and batch.rejected[0][0] == 4


def _metrics_with(weight: object) -> object:
    from flwr.app import ConfigRecord, MetricRecord

    if weight is None:
        return MetricRecord({"train-loss": 1.0})
    if isinstance(weight, str):  # not a metric type: a ConfigRecord slot instead
        return ConfigRecord({"num-examples": weight})
    return MetricRecord({"num-examples": weight})


def test_weights_are_screened_as_a_set(task_identity: None) -> None:
    """Two claims of 1e308 no longer overflow; with a cap, 1e12 is held to cap x median."""
    base = global_arrays()
    same = {k: base[k].numpy() for k in SHAPES}
    replies = [reply(same, node_id=i, num_examples=w) for i, w in enumerate([10, 10, 10, 1e12])]
    layout, ref = ArrayLayout.of(base), flat(base).astype(np.float32)
    capped = decode_replies(replies, ref, layout, weight_cap=2.0)
    np.testing.assert_allclose(capped.weights.numpy(), [0.2, 0.2, 0.2, 0.4])
    assert capped.capped == [3]
    huge = [reply(same, node_id=i, num_examples=1e308) for i in range(2)]
    weights = decode_replies(huge, ref, layout).weights.numpy()
    np.testing.assert_array_equal(weights, [0.5, 0.5])


def test_zero_d_arrays_keep_their_shape_through_unflatten() -> None:
    """Measured: ``num_batches_tracked`` came back with shape (1,), so every reply of the next
    round was rejected (or the runner crashed loading the state dict)."""
    record = ArrayRecord(
        {"w": Array(GOOD_W), "num_batches_tracked": Array(np.array(3, dtype=np.int64))}
    )
    layout = ArrayLayout.of(record)
    out = layout.unflatten(layout.flatten(record) + 1)
    assert out["num_batches_tracked"].shape == ()
    assert out["num_batches_tracked"].numpy().shape == ()
    assert int(out["num_batches_tracked"].numpy()) == 4
