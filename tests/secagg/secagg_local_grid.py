"""An in-process Grid for the secure-aggregation strategies' tests (no Ray).

:class:`LocalGrid` delivers each message to the secure client mod of its node, which wraps a
tiny train handler whose update is known, so a secure aggregate can be checked against the
plain weighted mean. ``fail(node, stage)`` makes a node crash or vanish at a stage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from flower_suite.clients.secagg_mod import RECORD_KEY, make_secagg_mod
from flower_suite.flower_compat import Run

SHAPES = {"w": (6, 5), "b": (5,)}
SIZE = 35


def arrays_of(flat: np.ndarray) -> ArrayRecord:
    out, offset = {}, 0
    for key, shape in SHAPES.items():
        size = int(np.prod(shape))
        out[key] = Array(flat[offset : offset + size].reshape(shape).astype(np.float32))
        offset += size
    return ArrayRecord(out)


def flat(record: ArrayRecord) -> np.ndarray:
    return np.concatenate([record[k].numpy().reshape(-1) for k in SHAPES]).astype(np.float64)


class LocalGrid(Grid):
    """Delivers each message to ``mod(msg, context, train)`` of its node, in process.

    ``fail(node, stage)`` makes a node crash (an error reply) or vanish (no reply) at a stage.
    Every reply is recorded to check what crosses the wire.
    """

    def __init__(self, nodes: dict[int, np.ndarray], weights: dict[int, int]) -> None:
        self.updates, self.weights = nodes, weights
        self.contexts = {
            n: Context(run_id=1, node_id=n, node_config={}, state=RecordDict(), run_config={})
            for n in nodes
        }
        self.fail: Callable[[int, int], str] = lambda node, stage: ""
        self.seen_replies: list[Message] = []
        self.mod = make_secagg_mod(source=None)

    def train(self, msg: Message, context: Context) -> Message:
        arrays = msg.content["arrays"]
        local = flat(arrays) + self.updates[context.node_id]
        metrics = MetricRecord({"num-examples": self.weights[context.node_id], "train-loss": 0.5})
        content = RecordDict({"arrays": arrays_of(local), "metrics": metrics})
        return Message(content=content, reply_to=msg)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.updates)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            stage = (
                msg.content.config_records[RECORD_KEY]["stage"] if RECORD_KEY in msg.content else -1
            )
            mode = self.fail(node, int(stage))  # type: ignore[arg-type]
            if mode == "vanish":
                continue
            if mode == "crash":
                reply = error_reply(msg, "node crashed")
            else:
                try:  # as Flower's ClientApp: an exception becomes an error reply
                    reply = self.mod(msg, self.contexts[node], self.train)
                except Exception as err:
                    reply = error_reply(msg, str(err))
            self.seen_replies.append(reply)
            replies.append(reply)
        return replies

    # unused abstract methods of Grid
    def create_message(self, *a, **k):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def push_messages(self, *a, **k):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def pull_messages(self, *a, **k):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    @property
    def run(self):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def set_run(self, run: Run) -> None:
        raise NotImplementedError


def error_reply(msg: Message, reason: str) -> Message:
    return Message(error=Error(code=0, reason=reason), reply_to=msg)
