"""Property-based fuzzing of the protocol: one party's message is mutated at one stage.

A valid round (in memory through ``simulate_round``, and through ``SecAggPlus.train_round``
over Flower Messages) has one message of one party rewritten on the wire: truncated bytes,
flipped bits, reordered or duplicated entries, forged keys / shares / ids, wrong types, a
missing or an extra field, a message replayed from another round, or a lost message. The
only allowed outcomes are

- the exact aggregate over the survivors (the honest ones, plus the victim if its mutated
  message was harmless), with the offender excluded and logged where it was caught,
- a clean ``SecAggAbort`` (core) / a recorded skipped round (Flower),

and nothing else: no other exception, no wrong aggregate. The one undetectable mutation is
in-range garbage in a client's own masked vector (a malicious client can always lie about its
input); for it the sum must still lie in the range quantization allows.

CI runs these derandomized (``tests/conftest.py``); every failure the random search found is
pinned with ``@example``.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ConfigRecord
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from secagg_harness import close_to, expected_model, make_grid, make_strategy

from flower_suite.clients.secagg_mod import ARRAYS_KEY, METRICS_IN_CLEAR, WEIGHT_KEY
from flower_suite.flower_compat import message_identity
from flower_suite.secagg import (
    SecAggAbort,
    SecAggConfig,
    SeededRandomSource,
    Stage,
    simulate_round,
)
from flower_suite.secagg.messages import (
    REPLIES,
    REQUESTS,
    pack_blobs,
    pack_ids,
    unpack_blobs,
    unpack_ids,
)
from flower_suite.secagg.params import SecAggParams
from flower_suite.secagg.quantize import encode_input, sum_violation
from flower_suite.strategies.secagg import SecAggPlus

N = 5
LENGTH = 6
CONFIG = SecAggConfig(
    num_shares=1.0,
    reconstruction_threshold=3,  # 2 spare shares per secret: one bad holder is survivable
    clipping_range=1.0,
    quantization_range=2**8,
    max_weight=8,
    stochastic_rounding=False,
    clip_warn_fraction=1.0,  # some entries are clipped on purpose; no warnings
)
PARAMS = CONFIG.resolve(N)
# SecAgg+ on a sparse graph: 7 clients, 5 neighbours each (incl. self), t = 3. Share indices
# are positions in the owner's neighbour list, so they differ from owner to owner here.
SPARSE = SecAggConfig(**{**CONFIG.__dict__, "num_shares": 5}).resolve(7)
VECTORS = np.random.default_rng(7).normal(0, 0.6, size=(7, LENGTH))
WEIGHTS = [3, 8, 1, 5, 2, 7, 4]

# (stage of the message, direction): every message of the protocol
MESSAGES = [
    (Stage.SETUP, "down"),
    (Stage.ADVERTISE_KEYS, "up"),
    (Stage.SHARE_KEYS, "down"),
    (Stage.SHARE_KEYS, "up"),
    (Stage.MASKED_INPUT, "down"),
    (Stage.MASKED_INPUT, "up"),
    (Stage.UNMASK, "down"),
    (Stage.UNMASK, "up"),
]
OPS = (
    "truncate",
    "flip",
    "reorder",
    "duplicate",
    "forge",
    "wrong_type",
    "missing",
    "extra",
    "replay",
    "lose",
)
# lists sent side by side (entry i of each belongs together)
ALIGNED = (
    ("ids", "indices", "c_pks", "s_pks"),
    ("dsts", "ciphertexts"),
    ("srcs", "ciphertexts"),
    ("b_owners", "b_shares"),
    ("s_owners", "s_shares"),
)
WRONG_VALUES: tuple[Any, ...] = ("text", [1, 2], None, 3.5, True, -1, b"")
FLOWER_WRONG_VALUES: tuple[Any, ...] = ("text", [1, 2], 3.5, True, -1, b"")  # ConfigRecord-able


@dataclass(frozen=True)
class Mutation:
    """What to do to which message; ``a``, ``b`` pick fields, positions and values."""

    message: int  # index into MESSAGES
    victim: int  # secure id (core) or node index (Flower)
    op: str
    a: int
    b: int
    noise: bytes
    sparse: bool = False  # SPARSE (7 clients, k = 5) instead of PARAMS (5 clients, complete)


mutations = st.builds(
    Mutation,
    message=st.integers(0, len(MESSAGES) - 1),
    victim=st.integers(1, 7),
    op=st.sampled_from(OPS),
    a=st.integers(0, 2**31),
    b=st.integers(0, 2**31),
    noise=st.binary(min_size=8, max_size=8),
    sparse=st.booleans(),
)


def _kinds(stage: Stage, direction: str) -> dict[str, str]:
    """Wire kind of every field of the message (``SetupRequest`` spreads its parameters)."""
    if direction == "down":
        kind = REQUESTS[stage]
    else:  # the reply to the setup message is stage 1's AdvertiseKeys
        kind = REPLIES[Stage.SETUP if stage == Stage.ADVERTISE_KEYS else stage]
    out = {"stage": "int", "version": "int", "round_id": "bytes"}
    if stage == Stage.SETUP:
        out["secure_id"] = "int"
        for name, value in PARAMS.to_dict().items():
            out[f"p_{name}"] = "float" if isinstance(value, float) else "int"
        return out
    return {**out, **kind.KINDS}


def _random_bytes(seed: bytes, size: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:size]


def _entries(kind: str, value: bytes) -> list[Any]:
    return unpack_ids(value) if kind == "ids" else unpack_blobs(value)


def _pack(kind: str, entries: list[Any]) -> bytes:
    return pack_ids(entries) if kind == "ids" else pack_blobs(entries)


def _partners(name: str, kinds: dict[str, str]) -> list[str]:
    for group in ALIGNED:
        if name in group and all(n in kinds for n in group):
            return list(group)
    return [name]


def _edit_lists(
    data: dict[str, Any], kinds: dict[str, str], name: str, joint: bool, edit: Any
) -> None:
    """Apply ``edit(entries) -> entries`` to one list field, or to it and its partners."""
    for field_name in _partners(name, kinds) if joint else [name]:
        kind = kinds[field_name]
        data[field_name] = _pack(kind, edit(_entries(kind, data[field_name])))


def mutate(
    data: dict[str, Any],
    kinds: dict[str, str],
    m: Mutation,
    replay: dict[str, Any] | None,
    wrong_values: tuple[Any, ...] = WRONG_VALUES,
) -> tuple[dict[str, Any] | None, str]:
    """The mutated message (None: lost) and the field that changed ("" for none / all)."""
    data = dict(data)
    names = sorted(kinds)
    name = names[m.a % len(names)]
    byte_fields = sorted(n for n in kinds if kinds[n] in ("bytes", "ids", "blobs"))
    list_fields = sorted(n for n in kinds if kinds[n] in ("ids", "blobs"))
    if m.op == "lose":
        return None, ""
    if m.op == "replay":
        return (dict(replay), "") if replay is not None else (data, "")
    if m.op == "missing":
        data.pop(name, None)
        return data, name
    if m.op == "extra":
        data["unexpected-field"] = m.b
        return data, ""
    if m.op == "wrong_type":
        data[name] = wrong_values[m.b % len(wrong_values)]
        return data, name
    if m.op in ("truncate", "flip"):
        name = byte_fields[m.a % len(byte_fields)]
        raw = bytearray(data[name])
        if not raw:
            return data, ""
        if m.op == "truncate":
            del raw[m.b % len(raw) :]
        else:
            raw[m.b % len(raw)] ^= 1 << (m.a % 8)
        data[name] = bytes(raw)
        return data, name
    if m.op == "forge":
        if kinds[name] in ("int", "float"):
            data[name] = (m.b % 2**40) - 2**20  # any value, within what records can carry
        elif kinds[name] == "str":
            data[name] = _random_bytes(m.noise, 6).hex()
        elif kinds[name] == "bytes":
            data[name] = _random_bytes(m.noise, len(data[name]))
        else:
            _forge_entry(data, kinds, name, m)
        return data, name
    if not list_fields:
        return data, ""
    name = list_fields[m.a % len(list_fields)]
    joint = m.b % 2 == 0  # together with its partner lists (a consistent edit) or alone
    if m.op == "reorder":
        _edit_lists(data, kinds, name, joint, lambda e: e[1:] + e[:1])
    else:  # duplicate
        _edit_lists(data, kinds, name, joint, lambda e: [*e, e[m.b % len(e)]] if e else e)
    return data, name


def _forge_entry(data: dict[str, Any], kinds: dict[str, str], name: str, m: Mutation) -> None:
    entries = _entries(kinds[name], data[name])
    if not entries:
        return
    i = m.b % len(entries)
    if kinds[name] == "ids":
        entries[i] = m.a % (N + 3)  # an id that may or may not exist
    else:
        entries[i] = _random_bytes(m.noise, len(entries[i]))
    data[name] = _pack(kinds[name], entries)


@functools.cache
def _earlier_round() -> dict[tuple[int, int, str], dict[str, Any]]:
    """Every message of a valid round with other keys and another round id (for replays)."""
    log: dict[tuple[int, int, str], dict[str, Any]] = {}
    simulate_round(VECTORS[:N], WEIGHTS[:N], PARAMS, seed=99, wire_log=log)
    return log


@functools.cache
def _earlier_sparse_round() -> dict[tuple[int, int, str], dict[str, Any]]:
    log: dict[tuple[int, int, str], dict[str, Any]] = {}
    simulate_round(VECTORS, WEIGHTS, SPARSE, seed=99, wire_log=log)
    return log


def _reference(survivors: tuple[int, ...], p: SecAggParams) -> list[int]:
    """The exact sum of the survivors' honest inputs, encoded here with the server's
    parameters (round to nearest): not what a (possibly misled) client says it encoded."""
    total = np.zeros(LENGTH + 1, dtype=object)
    for sid in survivors:
        encoded = encode_input(VECTORS[sid - 1], WEIGHTS[sid - 1], p, None)
        total += encoded.vector.astype(object)
    return [int(v) % p.modulus for v in total]


# -- core (Flower-free) ------------------------------------------------------------------------
@settings(max_examples=100)
@given(m=mutations)
# T = 128 instead of 256 for one client: an input on another scale, in range (found by
# review of the fuzz outcomes; fixed by the setup digest the client echoes)
@example(m=Mutation(0, 2, "forge", a=0, b=2**20 + 128, noise=bytes(8)))
@example(m=Mutation(2, 1, "reorder", a=2, b=1, noise=bytes(8)))  # share indices shifted
@example(m=Mutation(6, 3, "reorder", a=0, b=1, noise=bytes(8)))  # alive list shifted
@example(m=Mutation(7, 4, "duplicate", a=0, b=0, noise=bytes(8)))  # owner named twice
@example(m=Mutation(4, 2, "flip", a=0, b=40, noise=bytes(8)))  # one share fails AES-GCM
@example(m=Mutation(5, 5, "flip", a=6, b=3, noise=bytes(8)))  # bit 30 of a masked entry
@example(m=Mutation(1, 3, "replay", a=0, b=0, noise=bytes(8)))  # keys of another round
def test_core_round_survives_one_mutated_message(m: Mutation) -> None:
    stage, direction = MESSAGES[m.message]
    kinds = _kinds(stage, direction)
    params = SPARSE if m.sparse else PARAMS
    victim = (m.victim - 1) % params.n + 1
    earlier = _earlier_sparse_round() if m.sparse else _earlier_round()
    changed: list[str] = []

    def tamper(msg_stage: Stage, sid: int, way: str, data: dict[str, Any]):
        if (msg_stage, sid, way) != (stage, victim, direction):
            return data
        out, name = mutate(data, kinds, m, earlier.get((int(stage), sid, way)))
        changed.append(name)
        return out

    n = params.n
    try:
        outcome = simulate_round(VECTORS[:n], WEIGHTS[:n], params, seed=1, tamper=tamper)
    except SecAggAbort as err:
        event(f"core abort at {err.stage}")
        return  # a clean abort of the round is allowed
    result = outcome.result
    event(f"core survivors {len(result.survivors)}, exclusions {len(outcome.server.rejected)}")
    payload = changed == ["masked"] and victim in result.survivors and direction == "up"
    if payload and m.op in ("flip", "forge"):
        # a client's own masked vector: undetectable while in range, refused when out of it
        assert sum_violation(result.total, params, len(result.survivors)) == ""
    else:
        assert [int(v) for v in result.total] == _reference(result.survivors, params)
    assert set(range(1, n + 1)) - {victim} <= set(result.survivors)  # honest ones all in


# -- Flower layer: SecAggPlus.train_round over Messages --------------------------------------
# the keys the server adds to the stage-3 record beside the protocol message
FLOWER_EXTRA = {ARRAYS_KEY: "str", WEIGHT_KEY: "str", METRICS_IN_CLEAR: "int"}
FlowerLog = dict[tuple[int, int, str], dict[str, Any]]


def _recording(log: FlowerLog, way: str):
    def record(node: int, stage: int, data: dict[str, Any]) -> dict[str, Any]:
        log[(node, stage, way)] = dict(data)
        return data

    return record


def _flower_strategy(sparse: bool, source: SeededRandomSource) -> SecAggPlus:
    """SecAgg over 5 nodes, or SecAgg+ over 7 nodes with 5 neighbours each; t = 3."""
    if sparse:
        return make_strategy(n=7, num_shares=5, reconstruction_threshold=3, source=source)
    return make_strategy(n=N, reconstruction_threshold=3, source=source)


@functools.cache
def _earlier_flower_round(sparse: bool) -> FlowerLog:
    """Every record of a valid Flower round with another round id and other keys."""
    log: FlowerLog = {}
    grid, start = make_grid(seed=3, n=7 if sparse else N)
    grid.on_request, grid.on_reply = _recording(log, "down"), _recording(log, "up")
    strategy = _flower_strategy(sparse, SeededRandomSource(2))
    arrays, _ = strategy.train_round(grid, 1, start, ConfigRecord({}))
    assert arrays is not None
    return log


@settings(max_examples=50)
@given(m=mutations)
@example(m=Mutation(7, 2, "duplicate", a=0, b=0, noise=bytes(8)))  # owner named twice
@example(m=Mutation(7, 2, "forge", a=1, b=2, noise=bytes(8)))  # forged share
@example(m=Mutation(1, 4, "forge", a=0, b=0, noise=bytes(8)))  # forged public key
@example(m=Mutation(5, 1, "wrong_type", a=2, b=1, noise=bytes(8)))  # list, not bytes
@example(m=Mutation(4, 3, "replay", a=0, b=0, noise=bytes(8)))  # shares of another round
@example(m=Mutation(5, 2, "flip", a=6, b=3, noise=bytes(8)))  # bit 30 of a masked entry
def test_flower_round_survives_one_mutated_message(m: Mutation) -> None:
    with message_identity():
        _flower_round_with(m)


def _flower_round_with(m: Mutation) -> None:
    stage, direction = MESSAGES[m.message]
    wire_stage = Stage.SETUP if stage == Stage.ADVERTISE_KEYS else stage  # one round trip
    kinds = _kinds(stage, direction)
    if (stage, direction) == (Stage.MASKED_INPUT, "down"):
        kinds.update(FLOWER_EXTRA)
    grid, start = make_grid(seed=3, n=7 if m.sparse else N)
    victim = sorted(grid.updates)[(m.victim - 1) % len(grid.updates)]
    changed: list[str] = []

    def hook(way: str):
        def tamper(node: int, msg_stage: int, data: dict[str, Any]):
            if (node, msg_stage, way) != (victim, wire_stage, direction):
                return data
            replay = _earlier_flower_round(m.sparse).get((node, msg_stage, way))
            out, name = mutate(data, kinds, m, replay, FLOWER_WRONG_VALUES)
            changed.append(name)
            return out

        return tamper

    grid.on_request, grid.on_reply = hook("down"), hook("up")
    strategy = _flower_strategy(m.sparse, SeededRandomSource(1))
    arrays, metrics = strategy.train_round(grid, 1, start, ConfigRecord({}))  # never raises
    record = strategy.records[1]
    event(f"flower {'skipped' if arrays is None else 'aggregated'}, errors {len(record.errors)}")
    if arrays is None:
        assert record.aborted and metrics is None  # a recorded, logged skip
        return
    payload = changed == ["masked"] and victim in record.survivors and direction == "up"
    if not (payload and m.op in ("flip", "forge")):
        assert close_to(arrays, expected_model(grid, start, record.survivors))
    honest = set(grid.updates) - {victim}
    assert honest <= set(record.survivors)
    assert not record.aborted
