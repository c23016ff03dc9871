"""Shared pieces of the adversarial and fuzz tests: a Grid whose wire can be tampered with.

:class:`TamperGrid` delivers each message to its node's ``secagg_mod`` (wrapping a tiny train
handler with a known update and weight) in process, and lets a test rewrite, replace or drop
the protocol record of any request (server -> node) or reply (node -> server) at any stage,
as an active attacker on one party's messages would. Exceptions of the mod become error
replies, as Flower's ClientApp does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from flower_suite.clients.secagg_mod import RECORD_KEY, make_secagg_mod
from flower_suite.flower_compat import Run
from flower_suite.secagg import SeededRandomSource
from flower_suite.strategies.secagg import SecAggPlus

SHAPES = {"w": (6, 5), "b": (5,)}
SIZE = 35
CLIP = 0.5
LEVELS = 2**16
STEP = 2 * CLIP / (LEVELS - 1)

# (node, stage, protocol record as a dict) -> the dict to send instead, or None (vanish)
Tamper = Callable[[int, int, dict[str, Any]], dict[str, Any] | None]


def to_arrays(flat: np.ndarray) -> ArrayRecord:
    out, offset = {}, 0
    for key, shape in SHAPES.items():
        size = int(np.prod(shape))
        out[key] = Array(flat[offset : offset + size].reshape(shape).astype(np.float32))
        offset += size
    return ArrayRecord(out)


def to_flat(record: ArrayRecord) -> np.ndarray:
    return np.concatenate([record[k].numpy().reshape(-1) for k in SHAPES]).astype(np.float64)


def _untouched(node: int, stage: int, data: dict[str, Any]) -> dict[str, Any] | None:
    return data


class TamperGrid(Grid):
    """In-process delivery to each node's mod with hooks on both directions of the wire."""

    def __init__(self, updates: dict[int, np.ndarray], weights: dict[int, float]) -> None:
        self.updates, self.weights = updates, weights
        self.contexts = {
            n: Context(run_id=1, node_id=n, node_config={}, state=RecordDict(), run_config={})
            for n in updates
        }
        self.on_request: Tamper = _untouched
        self.on_reply: Tamper = _untouched
        self.mod = make_secagg_mod(source=None)

    def train(self, msg: Message, context: Context) -> Message:
        local = to_flat(msg.content["arrays"]) + self.updates[context.node_id]
        metrics = MetricRecord({"num-examples": self.weights[context.node_id], "train-loss": 0.5})
        content = RecordDict({"arrays": to_arrays(local), "metrics": metrics})
        return Message(content=content, reply_to=msg)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.updates)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        replies = []
        for msg in messages:
            node = int(msg.metadata.dst_node_id)
            stage = int(msg.content.config_records[RECORD_KEY]["stage"])  # type: ignore[arg-type]
            request = self.on_request(node, stage, dict(msg.content.config_records[RECORD_KEY]))
            if request is None:
                continue
            msg.content[RECORD_KEY] = ConfigRecord(request)
            try:  # as Flower's ClientApp: an exception becomes an error reply
                reply = self.mod(msg, self.contexts[node], self.train)
            except Exception as err:  # what a ClientApp does with any exception
                replies.append(Message(error=Error(code=0, reason=str(err)), reply_to=msg))
                continue
            record = reply.content.config_records.get(RECORD_KEY)
            if record is not None:
                changed = self.on_reply(node, stage, dict(record))
                if changed is None:
                    continue
                reply.content[RECORD_KEY] = ConfigRecord(changed)
            replies.append(reply)
        return replies

    # unused abstract methods of Grid
    def create_message(self, *a: Any, **k: Any) -> Message:
        raise NotImplementedError

    def push_messages(self, *a: Any, **k: Any) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, *a: Any, **k: Any) -> Iterable[Message]:
        raise NotImplementedError

    @property
    def run(self) -> Any:  # type: ignore[override]
        raise NotImplementedError

    def set_run(self, run: Run) -> None:
        raise NotImplementedError


def make_grid(seed: int = 0, n: int = 6) -> tuple[TamperGrid, ArrayRecord]:
    """``n`` nodes (ids 100..) with small random updates and integer weights 5..39."""
    rng = np.random.default_rng(seed)
    updates = {100 + i: rng.normal(0, 0.05, SIZE) for i in range(n)}
    weights = {100 + i: int(w) for i, w in enumerate(rng.integers(5, 40, n))}
    return TamperGrid(updates, weights), to_arrays(rng.normal(0, 1, SIZE))


def make_strategy(**overrides: Any) -> SecAggPlus:
    settings: dict[str, Any] = dict(
        num_shares=1.0,
        reconstruction_threshold=4,
        clipping_range=CLIP,
        quantization_range=LEVELS,
        max_weight=100,
        stochastic_rounding=False,
        source=SeededRandomSource(1),
    )
    settings.update(overrides)
    n = settings.pop("n", 6)
    return SecAggPlus(FedAvg(min_available_nodes=n, min_train_nodes=n), **settings)


def expected_model(grid: TamperGrid, start: ArrayRecord, members: Iterable[int]) -> np.ndarray:
    """The plain weighted mean of the members' clipped updates applied to ``start``."""
    members = list(members)
    w = np.array([grid.weights[n] for n in members], dtype=np.float64)
    updates = np.stack([np.clip(grid.updates[n], -CLIP, CLIP) for n in members])
    return to_flat(start) + (w[:, None] * updates).sum(0) / w.sum()


def close_to(arrays: ArrayRecord, expected: np.ndarray) -> bool:
    """Within half a quantization step (round to nearest) plus float32 storage."""
    return bool(np.abs(to_flat(arrays) - expected).max() <= STEP / 2 + 1e-6)
