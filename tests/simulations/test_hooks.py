"""Round hooks: test-set evaluation and the byte-metering Grid (no Ray)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid

from flower_suite.data import load_digits_split
from flower_suite.flower_compat import Run
from flower_suite.models import MLP
from flower_suite.simulations.engine.hooks import TestSetEvaluation
from flower_suite.simulations.engine.metering import MeteredGrid
from flower_suite.training import evaluate


class EchoGrid(Grid):
    """A Grid whose clients return the arrays they receive (each in float64: 2x the bytes)."""

    def __init__(self) -> None:
        self.pushed: list[Message] = []

    @property
    def run(self):
        return None

    def set_run(self, run: Run) -> None: ...

    def create_message(self, *args, **kwargs):
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return [1, 2]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        self.pushed += list(messages)
        return [str(i) for i in range(len(self.pushed))]

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return []

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None):
        replies = []
        for msg in messages:
            arrays = msg.content["arrays"].to_numpy_ndarrays()
            doubled = ArrayRecord([a.astype(np.float64) for a in arrays])
            content = RecordDict({"arrays": doubled, "metrics": MetricRecord({"num-examples": 1})})
            replies.append(Message(content=content, reply_to=msg))
        return replies


def _messages(arrays: list[np.ndarray], n: int) -> list[Message]:
    return [
        Message(
            content=RecordDict({"arrays": ArrayRecord(arrays), "config": ConfigRecord({})}),
            dst_node_id=i + 1,
            message_type=MessageType.TRAIN,
        )
        for i in range(n)
    ]


def test_metered_grid_counts_array_bytes(task_identity: None) -> None:
    """Bytes sent = n x payload; float64 replies count double; counters reset when taken."""
    # Prepare
    arrays = [np.zeros((10, 10), np.float32), np.zeros(5, np.float32)]
    payload = ArrayRecord(arrays).count_bytes()
    grid = MeteredGrid(EchoGrid())
    # Execute
    replies = list(grid.send_and_receive(_messages(arrays, 3)))
    sent, received = grid.take_counts()
    # Assert
    assert len(replies) == 3
    assert payload >= 105 * 4  # the raw float32 data, plus serialization overhead
    assert sent == 3 * payload
    assert received == 3 * ArrayRecord([a.astype(np.float64) for a in arrays]).count_bytes()
    assert received > sent
    assert grid.take_counts() == (0, 0)


def test_metered_grid_counts_push_and_forwards(task_identity: None) -> None:
    """push_messages is metered too and reaches the inner grid; node ids pass through."""
    inner = EchoGrid()
    grid = MeteredGrid(inner)
    arrays = [np.ones(7, np.float32)]
    grid.push_messages(_messages(arrays, 2))
    assert len(inner.pushed) == 2
    assert grid.take_counts()[0] == 2 * ArrayRecord(arrays).count_bytes()
    assert list(grid.get_node_ids()) == [1, 2]


def test_test_set_evaluation_matches_direct_evaluation() -> None:
    """The hook loads the arrays and reports the same loss/accuracy as `evaluate`."""
    _, test = load_digits_split()
    torch.manual_seed(1)
    model = MLP()
    hook = TestSetEvaluation(MLP, test)
    metrics = hook(3, ArrayRecord(model.state_dict()))
    direct = evaluate(model, test, device=torch.device("cpu"))
    assert metrics["test-acc"] == direct.accuracy
    assert abs(metrics["test-loss"] - direct.loss) < 1e-6


def test_metered_grid_orders_nodes_and_replies_by_partition(task_identity: None) -> None:
    """Known partitions: node ids and replies come back in partition order."""
    grid = MeteredGrid(EchoGrid())
    grid.partitions = {1: 1, 2: 0}
    assert list(grid.get_node_ids()) == [2, 1]
    messages = _messages([np.zeros(3, np.float32)], 2)  # dst 1 then 2
    replies = list(grid.send_and_receive(messages))
    assert [r.metadata.src_node_id for r in replies] == [2, 1]
