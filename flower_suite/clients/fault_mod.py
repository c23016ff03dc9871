"""An opt-in client mod that injects faults, for experiments and tests of deployments.

Not a defense and not an attack model: it makes one SuperNode misbehave the way real nodes
do (a crash, a straggler, an error, a corrupted reply), so that the server's handling of
each can be exercised on a real federation (``tests/deployment``; RELIABILITY.md lists what
the server does with each). The ``flwr run`` app (:mod:`flower_suite.simulations.flwr_app`)
puts it in front of its ClientApp only on a node whose ``--node-config`` sets ``fault``::

    flower-supernode ... --node-config 'partition-id=3 num-partitions=5 fault="nan" fault-round=1'

Keys (node config):

- ``fault``: ``"nan"`` (the reply's first floating-point array filled with NaN), ``"shape"``
  (the reply's first floating-point array one element short: a mis-shaped array),
  ``"error"`` (the ClientApp raises: Flower sends an error reply), ``"slow"`` (sleep
  ``fault-delay`` seconds, default 600, before training: slower than any round timeout),
  ``"exit"`` (the ClientApp process ends at once without a reply, ``os._exit(1)``).
- ``fault-round``: the server round it happens in (``server-round`` of the message's
  config, else its group id); ``0`` (the default) = every round.
- ``fault-marker``: a file path touched when the fault fires (tests use it to act, e.g. to
  kill the node, at the right moment).

Only training messages (``train`` and ``train.<action>``: FedMA's layer steps, SecAgg's
stages) are affected; queries and evaluations pass through. An unknown ``fault`` value is a
``ValueError`` naming the key, on the first message.
"""

from __future__ import annotations

import time
from logging import WARNING
from pathlib import Path

import numpy as np
from flwr.app import Array, Context, Message, MessageType
from flwr.common import log

from flower_suite.flower_compat import ClientAppCallable

__all__ = ["FAULTS", "fault_mod", "wants_fault"]

FAULTS = ("nan", "shape", "error", "slow")


def wants_fault(context: Context) -> bool:
    """Whether this node's config asks for a fault (the app adds the mod only then)."""
    return bool(str(context.node_config.get("fault", "")))


def _setting(context: Context, key: str, default: float) -> float:
    """A non-negative number from the node config; ``ValueError`` naming ``key`` otherwise."""
    value = context.node_config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{key}: expected a number >= 0 in the node config, got {value!r}")
    return float(value)


def _round_of(msg: Message) -> int | None:
    config = msg.content.config_records.get("config") if msg.has_content() else None
    if config is not None and "server-round" in config:
        return int(config["server-round"])  # type: ignore[arg-type]
    try:
        return int(msg.metadata.group_id)
    except ValueError:
        return None


def _applies(msg: Message, context: Context) -> bool:
    kind = msg.metadata.message_type
    if kind != MessageType.TRAIN and not kind.startswith(f"{MessageType.TRAIN}."):
        return False
    wanted = int(_setting(context, "fault-round", 0))
    return wanted == 0 or _round_of(msg) == wanted


def _corrupt(reply: Message, fault: str) -> Message:
    """Corrupt the first floating-point array of the reply's first ArrayRecord, in place."""
    if reply.has_error():
        return reply
    for record in reply.content.array_records.values():
        for name, array in list(record.items()):
            values = array.numpy()
            if not np.issubdtype(values.dtype, np.floating):
                continue
            # "nan": every value NaN; "shape": one element short
            bad = np.full_like(values, np.nan) if fault == "nan" else values.reshape(-1)[:-1].copy()
            record[name] = Array(bad)
            return reply
    return reply


def fault_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Inject the fault ``context.node_config["fault"]`` into a training message's handling
    (see the module docstring); every other message passes through unchanged."""
    fault = str(context.node_config.get("fault", ""))
    if not fault:
        return call_next(msg, context)
    if fault not in FAULTS:
        raise ValueError(f"fault: unknown fault {fault!r} (known: {', '.join(FAULTS)})")
    if not _applies(msg, context):
        return call_next(msg, context)
    marker = str(context.node_config.get("fault-marker", ""))
    if marker:
        Path(marker).touch()
    log(WARNING, "fault_mod: injecting %r into a %s message", fault, msg.metadata.message_type)
    if fault == "error":
        raise RuntimeError("fault_mod: injected error (node config fault='error')")
    if fault == "slow":
        time.sleep(_setting(context, "fault-delay", 600.0))
        return call_next(msg, context)
    return _corrupt(call_next(msg, context), fault)
