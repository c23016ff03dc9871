"""Which partition each node holds, known before round 1 (sampling and reply order need it).

Flower's simulation engine and the in-process engine assign node ``i`` partition ``i``
themselves: :func:`engine_partition_map` reads that assignment without a message, so start-up
does not grow with the number of clients (a query per node cost 65 s of the 86 s start-up of a
1,000-client run). On a deployment the nodes choose their partitions (``--node-config``) and
:func:`discover_partitions` asks each once, when sampling needs the answer before the first
reply.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from flower_suite.flower_compat import simulation_partition_map
from flower_suite.simulations.engine.metering import MeteredGrid

__all__ = ["discover_partitions", "engine_partition_map", "map_partitions", "wait_for_nodes"]


def wait_for_nodes(grid: Grid, num_nodes: int, timeout: float = 120.0) -> list[int]:
    """The node ids, once ``num_nodes`` nodes are connected (a TimeoutError after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while len(nodes := list(grid.get_node_ids())) < num_nodes:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(nodes)} of {num_nodes} nodes connected")
        time.sleep(0.05)
    return nodes


def engine_partition_map(grid: Grid, num_nodes: int) -> dict[int, int] | None:
    """Node id -> partition id as the engine assigned them, without a message: the in-process
    engine knows it, Flower's simulation engine keeps it in its link state. None on a
    deployment (nodes choose their own partitions)."""
    own = getattr(grid, "partition_map", None)
    if callable(own):
        mapping = own()
        return dict(mapping) if isinstance(mapping, dict) else None
    return simulation_partition_map(grid, num_nodes)


def map_partitions(grid: MeteredGrid, num_nodes: int, ask: bool, timeout: float = 120.0) -> None:
    """Teach ``grid`` each node's partition before round 1: from the engine when it knows
    (no round trip, whatever the number of clients), else, with ``ask``, by one ``query``
    message per node whose reply's ``client-info`` record says it."""
    nodes = wait_for_nodes(grid, num_nodes, timeout)
    known = engine_partition_map(grid, num_nodes)
    if known is not None and set(known) == set(nodes):
        grid.partitions.update(known)
        return
    if ask:
        discover_partitions(grid, nodes, timeout)


def discover_partitions(grid: MeteredGrid, nodes: Sequence[int], timeout: float = 120.0) -> None:
    """Ask every node (one ``query`` message each, no arrays) which partition it holds; the
    replies' ``client-info`` records teach ``grid`` the mapping."""
    messages = [
        Message(
            content=RecordDict({"config": ConfigRecord({})}),
            message_type=MessageType.QUERY,
            dst_node_id=node,
        )
        for node in nodes
    ]
    for reply in grid.send_and_receive(messages, timeout=timeout):
        if reply.has_error():
            raise RuntimeError(
                f"node {reply.metadata.src_node_id} did not report its partition: "
                f"{reply.error.reason}"
            )
    missing = set(nodes) - set(grid.partitions)
    if missing:
        raise RuntimeError(f"nodes {sorted(missing)} did not report their partition")
