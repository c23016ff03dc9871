"""Per-round server-side measurements: the extensible hook mechanism of the runner.

A hook is called once per round (and once for round 0, the initial model) with the current
global arrays and returns metrics to add to that round's record. Hooks are built by factories
that receive a :class:`HookContext`, so one can reach the strategy (selection records), the
metered grid (bytes) or the task (model, data). Attack runs add the hooks of
``attack_hooks.py`` (backdoor accuracy, attacker selection, update norms).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from flwr.app import ArrayRecord, Message
from flwr.serverapp import Grid
from torch import nn

from flower_suite.clients.client_app import CLIENT_INFO_KEY, load_arrays
from flower_suite.data.dataset import ArrayDataset
from flower_suite.forwarding_grid import ForwardingGrid
from flower_suite.training import evaluate, select_device


class RoundHook(Protocol):
    def __call__(self, server_round: int, arrays: ArrayRecord) -> Mapping[str, Any]: ...


@dataclass
class HookContext:
    """What a hook factory may use."""

    task: Any  # ExperimentTask (typed loosely to avoid an import cycle)
    strategy: Any
    grid: MeteredGrid
    # threats.ServerThreat of runs with an [attack] section (attack grid, plan), else None.
    threat: Any = None

    def model_for(self, arrays: ArrayRecord) -> nn.Module:
        """A model holding ``arrays``, whatever their architecture: strategies that change
        it (PUFFERFISH factorization, FedMA's wider layers) provide ``model_for_arrays``."""
        build = getattr(self.strategy, "model_for_arrays", None)
        if build is not None:
            return build(arrays)
        model = self.task.build_model()
        load_arrays(model, arrays)
        return model


HookFactory = Callable[[HookContext], RoundHook]


class TestSetEvaluation:
    """Loss and accuracy of the global model on the held-out test set."""

    __test__ = False  # not a pytest class

    def __init__(
        self,
        model_fn: Callable[[], Any],
        test: ArrayDataset,
        prefix: str = "test",
        model_for: Callable[[ArrayRecord], nn.Module] | None = None,
    ) -> None:
        self.model = model_fn()
        self.test = test
        self.prefix = prefix
        self.device = select_device()
        self.model_for = model_for  # for arrays of another architecture than model_fn's

    def __call__(self, server_round: int, arrays: ArrayRecord) -> Mapping[str, float]:
        if self.model_for is not None and not _fits(self.model, arrays):
            self.model = self.model_for(arrays)
        else:
            load_arrays(self.model, arrays)
        result = evaluate(self.model, self.test, device=self.device)
        return {f"{self.prefix}-loss": result.loss, f"{self.prefix}-acc": result.accuracy}


def test_set_evaluation(ctx: HookContext) -> RoundHook:
    """Default hook factory: evaluate on the experiment's test split."""
    return TestSetEvaluation(ctx.task.build_model, ctx.task.data()[1], model_for=ctx.model_for)


def _fits(model: nn.Module, arrays: ArrayRecord) -> bool:
    state = model.state_dict()
    return list(state) == list(arrays.keys()) and all(
        tuple(state[k].shape) == tuple(arrays[k].shape) for k in state
    )


def communication(ctx: HookContext) -> RoundHook:
    """Bytes of arrays sent to and received from clients since the last round."""

    def hook(server_round: int, arrays: ArrayRecord) -> Mapping[str, float]:
        sent, received = ctx.grid.take_counts()
        return {
            "bytes-sent": float(sent),
            "bytes-received": float(received),
            # Size of the global model, which changes under PUFFERFISH and FedMA.
            "global-bytes": float(arrays.count_bytes()),
        }

    return hook


def selection_records(ctx: HookContext) -> RoundHook:
    """Which node ids a robust strategy selected and rejected this round (if it records them).

    Strategies deriving from ``RobustFedAvg`` keep ``records[round]``; for others this hook
    adds nothing.
    """

    def hook(server_round: int, arrays: ArrayRecord) -> Mapping[str, Any]:
        records = getattr(ctx.strategy, "records", None)
        record = records.get(server_round) if isinstance(records, dict) else None
        if record is None:
            return {}
        out: dict[str, Any] = {
            "selected-nodes": list(record.selected),
            "rejected-nodes": [node for node, _ in record.rejected],
        }
        partitions = ctx.grid.partitions
        if partitions:
            out["selected-partitions"] = [partitions.get(n, -1) for n in record.selected]
            out["rejected-partitions"] = [partitions.get(n, -1) for n, _ in record.rejected]
        out.update({f"rule-{key}": value for key, value in record.info.items()})
        if record.skipped:
            out["skipped"] = record.skipped
        return out

    return hook


DEFAULT_HOOKS: tuple[HookFactory, ...] = (test_set_evaluation, communication, selection_records)


# ConfigRecords that carry model payload (secure aggregation's keys, shares and masked
# vectors) count as traffic like ArrayRecords; other configs are hyper-parameters.
PAYLOAD_CONFIG_KEYS = ("secagg",)


def _array_bytes(messages: Iterable[Message]) -> int:
    total = 0
    for msg in messages:
        if msg.has_content():
            total += sum(rec.count_bytes() for rec in msg.content.array_records.values())
            configs = msg.content.config_records
            total += sum(_config_bytes(configs[k]) for k in PAYLOAD_CONFIG_KEYS if k in configs)
    return total


def _value_bytes(value: Any) -> int:
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, list):
        return sum(_value_bytes(v) for v in value)
    return 1 if isinstance(value, bool) else 8


def _config_bytes(record: Any) -> int:
    """Payload bytes of a ConfigRecord (Flower's ``count_bytes`` rejects list values)."""
    return sum(len(key) + _value_bytes(value) for key, value in record.items())


class MeteredGrid(ForwardingGrid):
    """A Grid that forwards everything to ``inner`` and counts the bytes of ArrayRecords."""

    def __init__(self, inner: Grid) -> None:
        super().__init__(inner)
        self.bytes_sent = 0
        self.bytes_received = 0
        # node id -> partition id, when known (see `server.discover_partitions`).
        self.partitions: dict[int, int] = {}

    def learn_partitions(self, replies: Iterable[Message]) -> None:
        """Record the partition each replying node reports in its ``client-info`` record."""
        for reply in replies:
            if reply.has_content() and CLIENT_INFO_KEY in reply.content.config_records:
                info = reply.content.config_records[CLIENT_INFO_KEY]
                if "partition-id" in info:
                    self.partitions[int(reply.metadata.src_node_id)] = int(info["partition-id"])

    def take_counts(self) -> tuple[int, int]:
        """Bytes sent and received since the previous call."""
        counts = (self.bytes_sent, self.bytes_received)
        self.bytes_sent = self.bytes_received = 0
        return counts

    def get_node_ids(self) -> Iterable[int]:
        """Node ids; in partition order once partitions are known, so that Flower's
        ``random.sample`` over this list (seeded by the runner) picks the same partitions in
        every run although simulation node ids are random."""
        nodes = list(self.inner.get_node_ids())
        if self.partitions:
            nodes.sort(key=lambda node: (self.partitions.get(node, len(self.partitions)), node))
        return nodes

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        self.bytes_sent += _array_bytes(messages)
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self.inner.pull_messages(message_ids))
        self.bytes_received += _array_bytes(replies)
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        self.bytes_sent += _array_bytes(messages)
        replies = list(self.inner.send_and_receive(messages, timeout=timeout))
        self.bytes_received += _array_bytes(replies)
        self.learn_partitions(replies)
        if self.partitions:
            # Replies arrive in Ray's completion order; aggregating them in partition order
            # makes floating-point sums, and so whole runs, bitwise repeatable.
            replies.sort(key=lambda m: self.partitions.get(int(m.metadata.src_node_id), -1))
        return replies
