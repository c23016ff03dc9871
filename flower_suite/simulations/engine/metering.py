"""The byte-counting Grid of every run: ``MeteredGrid`` under the strategy (and attack grids).

It forwards every call to the Grid it wraps and counts the bytes of the arrays (and of the
secure-aggregation payload records) sent and received; it learns each node's partition from
the ``client-info`` record of its replies and then lists nodes, and orders replies, by
partition, so sampling and floating-point sums repeat bitwise across runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import ConfigRecord, Message
from flwr.serverapp import Grid

from flower_suite.forwarding_grid import ForwardingGrid
from flower_suite.wire.config import read_int
from flower_suite.wire.keys import CLIENT_INFO_KEY, RECORD_KEY

__all__ = ["PAYLOAD_CONFIG_KEYS", "MeteredGrid"]

# ConfigRecords that carry model payload (secure aggregation's keys, shares and masked
# vectors) count as traffic like ArrayRecords; other configs are hyper-parameters.
PAYLOAD_CONFIG_KEYS = (RECORD_KEY,)
# What a client's ``client-info`` says about where it runs (recorded in ``placement.csv``).
PLACEMENT_KEYS = ("host", "pid", "ray-node")


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


def _config_bytes(record: ConfigRecord) -> int:
    """Payload bytes of a ConfigRecord (Flower's ``count_bytes`` rejects list values)."""
    return sum(len(key) + _value_bytes(value) for key, value in record.items())


def _where(info: ConfigRecord) -> dict[str, str]:
    """The placement fields a client reports (strings, whatever the client sent)."""
    return {key: str(info[key]) for key in PLACEMENT_KEYS if key in info}


class MeteredGrid(ForwardingGrid):
    """A Grid that forwards everything to ``inner`` and counts the bytes of ArrayRecords."""

    def __init__(self, inner: Grid) -> None:
        super().__init__(inner)
        self.bytes_sent = 0
        self.bytes_received = 0
        # node id -> partition id, when known (see `node_map.map_partitions`).
        self.partitions: dict[int, int] = {}
        # partition id -> where its client ran (host, pid, ray-node), as its replies say.
        self.placements: dict[int, dict[str, str]] = {}

    def learn_partitions(self, replies: Iterable[Message]) -> None:
        """Record the partition each replying node reports in its ``client-info`` record."""
        for reply in replies:
            if reply.has_content() and CLIENT_INFO_KEY in reply.content.config_records:
                info = reply.content.config_records[CLIENT_INFO_KEY]
                if "partition-id" in info:
                    try:  # reported by the client: a malformed one is ignored, not fatal
                        partition = read_int(info, "partition-id")
                    except (TypeError, ValueError):
                        continue
                    # The first word on a node stands (the engine's, when it knows): a
                    # server-assigned data partition (DETOX) is not the node's own.
                    node = int(reply.metadata.src_node_id)
                    partition = self.partitions.setdefault(node, partition)
                    self.placements[partition] = _where(info)

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
