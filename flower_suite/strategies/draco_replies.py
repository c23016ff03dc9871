"""Reply screening of the DRACO strategy (spec draco.md sections 7.5 and 10).

Each ``train.draco`` reply is keyed by the index of the node that *sent* it (never by arrival
order) and read strictly: a missing reply, an error reply, a duplicate, a message that is not
float64 ``(d,)`` (``real``, and ``imag`` for the cyclic code) or holds NaN/Inf becomes an
erasure with a reason. Erasures count toward ``s`` in the decoders
(:mod:`flower_suite.coding.screening`), so the exact-recovery guarantee of Definition 6.3
(dissertation section 6.2) holds while erasures + adversaries <= s.
"""

from __future__ import annotations

from collections.abc import Sequence
from logging import WARNING

import numpy as np
from flwr.app import Message
from flwr.common import log

from flower_suite.coding import StackedReplies, stack_replies
from flower_suite.wire.array import ReplyError, read_array
from flower_suite.wire.keys import DRACO_MESSAGE_KEY

__all__ = ["collect_messages"]


def _read_message(msg: Message, dimension: int, complex_valued: bool) -> np.ndarray:
    """A reply's coded message, read strictly (``ReplyError`` otherwise)."""
    record = msg.content.array_records.get(DRACO_MESSAGE_KEY)
    if record is None:
        raise ReplyError(f"no {DRACO_MESSAGE_KEY!r} record")
    names = ("real", "imag") if complex_valued else ("real",)
    expected = set(names)
    if set(record.keys()) != expected:
        raise ReplyError(f"arrays {sorted(record.keys())}, expected {sorted(expected)}")
    parts = [read_array(record[k], shape=(dimension,), dtype=np.dtype(np.float64)) for k in names]
    message = parts[0] + 1j * parts[1] if complex_valued else parts[0]
    if not np.isfinite(message).all():
        raise ReplyError("non-finite values (NaN or Inf)")
    return message


def collect_messages(
    replies: Sequence[Message], index: dict[int, int], *, dimension: int, complex_valued: bool
) -> tuple[StackedReplies, dict[int, Message]]:
    """The ``(P, dimension)`` message matrix keyed by node index (arrival order is irrelevant)
    and the accepted replies; error replies, duplicates, malformed or non-finite messages and
    missing nodes are erasures with a reason (they count toward ``s``)."""
    vectors: dict[int, np.ndarray] = {}
    accepted: dict[int, Message] = {}
    reasons: dict[int, str] = {}
    for msg in replies:
        j = index.get(int(msg.metadata.src_node_id))
        if j is None:
            log(WARNING, "DRACO: reply from unknown node %s ignored", msg.metadata.src_node_id)
            continue
        if j in accepted or j in reasons:
            reasons[j] = "duplicate reply"
            continue
        if msg.has_error():
            reasons[j] = f"error reply: {msg.error.reason}"
            continue
        try:
            vectors[j] = _read_message(msg, dimension, complex_valued)
        except (ReplyError, KeyError, TypeError, ValueError) as err:
            reasons[j] = f"malformed message: {err}"
            continue
        accepted[j] = msg
    for j in reasons:
        vectors.pop(j, None)
        accepted.pop(j, None)
    stacked = stack_replies(
        dict(vectors.items()),
        num_nodes=len(index),
        dimension=dimension,
        complex_valued=complex_valued,
    )
    merged = {**stacked.reasons, **reasons}
    return StackedReplies(stacked.messages, tuple(sorted(merged)), merged), accepted
