"""An update as attacks see it: a reply's float arrays minus the received ones, and back.

:func:`flat_update` reads both ``ArrayRecord`` objects through the strict reader
(:func:`~flower_suite.wire.array.read_array`: metadata, ``.npy`` header and byte count checked)
and returns one float64 vector; :func:`apply_update` writes ``received + update`` back in each
array's dtype. :func:`mark_attacker` tags a rewritten reply with the measurement-only
``attack-info`` record. Shared by the attacker client mods (``clients/attacker.py``), the
server-side ``ByzantineInjector`` and the simulations' ``AttackGrid`` (the Flower-facing half of
``wire``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message

from flower_suite.wire.array import ReplyError, read_array
from flower_suite.wire.keys import ATTACK_INFO_KEY

__all__ = ["apply_update", "flat_update", "float_keys", "mark_attacker"]


def float_keys(record: ArrayRecord) -> list[str]:
    """Keys of the floating-point arrays, in the record's (fixed) order."""
    return [k for k, a in record.items() if np.issubdtype(np.dtype(a.dtype), np.floating)]


def flat_update(reply: ArrayRecord, received: ArrayRecord) -> tuple[np.ndarray, list[str]]:
    """``reply - received`` over the float arrays, concatenated in key order, and the keys.

    Integer buffers (BatchNorm counters) are not part of the attack and are left untouched.
    """
    if set(reply.keys()) != set(received.keys()):
        raise ValueError("reply arrays do not match the received arrays (names)")
    keys = float_keys(received)
    parts = []
    for key in keys:
        old = received[key]
        shape, dtype = tuple(old.shape), np.dtype(old.dtype)
        try:  # the reply validator's reader: header and byte count checked, no np.load
            new = read_array(reply[key], shape=shape, dtype=dtype)
            before = read_array(old, shape=shape, dtype=dtype)
        except ReplyError as err:
            raise ValueError(f"array {key!r}: {err}") from None
        parts.append((new.astype(np.float64) - before.astype(np.float64)).reshape(-1))
    return (np.concatenate(parts) if parts else np.zeros(0)), keys


def apply_update(
    received: ArrayRecord, reply: ArrayRecord, keys: Sequence[str], update: np.ndarray
) -> ArrayRecord:
    """``received + update`` on ``keys`` (in each array's dtype); other arrays from ``reply``."""
    arrays: dict[str, Array] = {}
    offset = 0
    chosen = set(keys)
    for key in received:
        if key in chosen:
            base = received[key].numpy()
            chunk = update[offset : offset + base.size].reshape(base.shape)
            offset += base.size
            # np.array keeps a 0-d array 0-d (np.ascontiguousarray would make it shape (1,))
            arrays[key] = Array(np.array(base + chunk, dtype=base.dtype, order="C"))
        else:
            arrays[key] = Array(reply[key].numpy().copy())
    if offset != update.size:
        raise ValueError(f"update has {update.size} entries, the arrays {offset}")
    return ArrayRecord(arrays)


def mark_attacker(reply: Message, attack: str, server_round: int) -> None:
    """Add the measurement-only ``attack-info`` record to ``reply``."""
    reply.content[ATTACK_INFO_KEY] = ConfigRecord(
        {"attacker": True, "attack": attack, "server-round": server_round}
    )
