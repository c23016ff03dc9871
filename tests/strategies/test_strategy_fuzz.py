"""Property tests: every registered strategy survives any one mutated reply.

Nine honest replies and one mutated one (bytes, header, shape, dtype, stype, values, weight,
node id, records, error) reach ``aggregate_train``. The only outcomes allowed are a result
(finite, the global model's names, shapes and dtypes), a logged exclusion of the mutated
reply, or a skipped round; never an exception out of the strategy.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord
from hypothesis import given, settings
from hypothesis import strategies as st
from strategy_fixtures import configure, reply

from flower_suite.strategies import STRATEGIES

pytestmark = pytest.mark.usefixtures("task_identity")

N = 10
NODES = list(range(100, 100 + N))
# Constructor arguments that make each registered strategy valid for 10 replies.
ARGS: dict[str, dict[str, Any]] = {
    "fedprox": {"proximal_mu": 0.1},
    "krum": {"num_malicious_nodes": 1},
    "multikrum": {"num_malicious_nodes": 1},
    "bulyan": {"num_malicious_nodes": 1},
    "crfl": {"rho": 100.0},
    "detox": {"redundancy": 5},
}
# The package's own strategies (tests may register more); FedMA and DRACO have their own round
# types (DRACO's coded replies are fuzzed in test_draco_strategy.py).
NAMES = sorted(
    name
    for name in STRATEGIES
    if name not in ("fedma", "draco")
    and STRATEGIES.get(name).__module__.startswith("flower_suite.")
)

MUTATIONS = (
    "truncate",
    "extend",
    "flip_byte",
    "header_shape",
    "meta_shape",
    "meta_dtype",
    "stype",
    "nan",
    "inf",
    "huge",
    "float32_max",
    "weight",
    "duplicate_node",
    "drop_array",
    "extra_array",
    "rename_array",
    "second_arrayrecord",
    "no_metrics",
    "error",
    "int_overflow",
)
WEIGHTS = (0, -1, float("nan"), float("inf"), 1e308, 5e-324, 2**63 - 1, [1, 2])


def _global(dtypes: list[str]) -> ArrayRecord:
    rng = np.random.default_rng(0)
    shapes = [(3, 2), (2,), ()]
    arrays = {}
    for i, (shape, dtype) in enumerate(zip(shapes, dtypes, strict=True)):
        arrays[f"a{i}"] = Array(np.asarray(rng.normal(size=shape) * 5).astype(dtype))
    return ArrayRecord(arrays)


def _npy(value: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, value, allow_pickle=False)
    return buffer.getvalue()


def _honest(base: ArrayRecord, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for key, array in base.items():
        value = array.numpy()
        step = rng.normal(0, 0.1, value.shape)
        if np.issubdtype(value.dtype, np.integer):
            step = np.rint(step * 10)
        out[key] = np.asarray(value + step).astype(value.dtype)
    return out


@dataclass(frozen=True)
class Mutation:
    """One mutation of one reply; every field is drawn, so a failure pins as an @example."""

    kind: str
    key_index: int = 0  # which array (modulo the number of arrays)
    offset: int = 0  # a byte position or length (modulo the data length)
    junk: bytes = b"\x00"
    choice: int = 0  # an index into the options of ``kind`` (modulo their number)
    shape: tuple[int, ...] = ()


META_DTYPES = ("float16", "float64", "int32", "bool", "complex64", "<U3", "nonsense")
STYPES = ("torch.Tensor", "", "pickle")
FILL = {"nan": np.nan, "inf": -np.inf, "huge": 1e38, "float32_max": np.finfo(np.float32).max}

mutations = st.builds(
    Mutation,
    kind=st.sampled_from(MUTATIONS),
    key_index=st.integers(0, 2),
    offset=st.integers(0, 2**16),
    junk=st.binary(min_size=1, max_size=16),
    choice=st.integers(0, 15),
    shape=st.lists(st.integers(0, 4), max_size=3).map(tuple),
)


def _mutate_array(old: Array, m: Mutation) -> Array | None:
    """The mutated array (None: this mutation does not apply to it)."""
    raw = bytearray(old.data)
    if m.kind == "truncate":
        return Array(old.dtype, old.shape, old.stype, bytes(raw[: m.offset % len(raw)]))
    if m.kind == "extend":
        return Array(old.dtype, old.shape, old.stype, bytes(raw) + m.junk)
    if m.kind == "flip_byte":
        raw[m.offset % len(raw)] ^= 1 + m.choice % 255
        return Array(old.dtype, old.shape, old.stype, bytes(raw))
    if m.kind == "header_shape":
        return Array(old.dtype, old.shape, old.stype, _npy(np.zeros(m.shape, np.dtype(old.dtype))))
    if m.kind == "meta_shape":
        return Array(old.dtype, m.shape, old.stype, bytes(raw))
    if m.kind == "meta_dtype":
        return Array(META_DTYPES[m.choice % len(META_DTYPES)], old.shape, old.stype, bytes(raw))
    if m.kind == "stype":
        return Array(old.dtype, old.shape, STYPES[m.choice % len(STYPES)], bytes(raw))
    value = np.array(old.numpy())
    if m.kind in FILL and np.issubdtype(value.dtype, np.floating):
        value.reshape(-1)[: max(1, value.size // 2)] = FILL[m.kind]
        return Array(value)
    if m.kind == "int_overflow" and np.issubdtype(value.dtype, np.integer):
        value.reshape(-1)[:1] = np.iinfo(value.dtype).max
        return Array(value)
    return None


def _mutate(msg: Any, m: Mutation) -> None:
    """Apply ``m`` to reply ``msg`` in place."""
    arrays = msg.content["arrays"]
    key = list(arrays.keys())[m.key_index % len(arrays)]
    mutated = _mutate_array(arrays[key], m)
    if mutated is not None:
        arrays[key] = mutated
    elif m.kind == "weight":
        weight = WEIGHTS[m.choice % len(WEIGHTS)]
        msg.content["metrics"] = MetricRecord({"num-examples": weight, "train-loss": 1.0})
    elif m.kind == "duplicate_node":
        msg.metadata.src_node_id = NODES[0]
    elif m.kind == "drop_array":
        del arrays[key]
    elif m.kind == "extra_array":
        arrays["extra"] = Array(np.zeros(3, np.float32))
    elif m.kind == "rename_array":
        arrays[key + "_renamed"] = arrays.pop(key)
    elif m.kind == "second_arrayrecord":
        msg.content["more"] = ArrayRecord({"x": Array(np.zeros(2, np.float32))})
    elif m.kind == "no_metrics":
        del msg.content["metrics"]
        msg.content["cfg"] = ConfigRecord({"num-examples": 10})
    elif m.kind == "error":
        msg.has_error.return_value = True
        msg.has_content.return_value = False
        msg.error.reason = "client crashed"


def _check_outcome(arrays: ArrayRecord | None, metrics: Any, base: ArrayRecord) -> None:
    if arrays is None:
        assert metrics is None
        return
    assert list(arrays.keys()) == list(base.keys())
    for key, array in base.items():
        out = arrays[key].numpy()
        assert out.shape == tuple(array.shape) and str(out.dtype) == array.dtype
        assert np.isfinite(out).all()


def _make(name: str) -> Callable[[], Any]:
    return lambda: STRATEGIES.create(name, **ARGS.get(name, {}))


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=40)
@given(
    mutation=mutations,
    dtypes=st.lists(st.sampled_from(["float32", "float64", "int64"]), min_size=3, max_size=3),
    position=st.integers(0, N - 1),
)
def test_any_one_mutated_reply_gives_a_result_an_exclusion_or_a_skip(
    name: str, mutation: Mutation, dtypes: list[str], position: int
) -> None:
    strategy = _make(name)()
    base = _global(dtypes)
    configure(strategy, base, NODES)
    replies = [reply(_honest(base, seed=node), node_id=node) for node in NODES]
    _mutate(replies[position], mutation)
    arrays, metrics = strategy.aggregate_train(1, replies)
    _check_outcome(arrays, metrics, base)
    record = strategy.records.get(1)
    if record is not None and mutation.kind in ("truncate", "stype", "error", "drop_array"):
        assert replies[position].metadata.src_node_id in [n for n, _ in record.rejected]


@pytest.mark.parametrize("name", NAMES)
def test_two_claims_of_1e308_examples(name: str) -> None:
    """Measured: two replies claiming 1e308 examples overflowed every weight to NaN."""
    strategy = _make(name)()
    base = _global(["float32", "float32", "int64"])
    configure(strategy, base, NODES)
    replies = [reply(_honest(base, seed=node), node_id=node) for node in NODES]
    for msg in replies[-2:]:
        msg.content["metrics"] = MetricRecord({"num-examples": 1e308, "train-loss": 1.0})
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None
    _check_outcome(arrays, metrics, base)
