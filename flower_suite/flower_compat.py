"""The only module of flower_suite that reaches past Flower's public API.

Flower's public surface is what ``flwr.app``, ``flwr.serverapp``, ``flwr.clientapp``,
``flwr.simulation`` and ``flwr.common`` list in ``__all__``. A few things we need are only
reachable through Flower's internal modules; each is wrapped here, with a docstring naming the
internals it relies on, so a Flower upgrade that renames or changes them breaks in one place
and is caught by ``tests/test_flower_compat.py``. Everything else imports Flower's public
modules directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common.constant import ErrorCode
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid
from flwr.serverapp.strategy import strategy_utils
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

__all__ = [
    "CLIENT_APP_RAISED_EXCEPTION",
    "ClientAppCallable",
    "Mod",
    "NodeInfo",
    "Run",
    "aggregate_metricrecords",
    "empty_run",
    "log_strategy_start_info",
    "message_identity",
    "sample_nodes",
    "set_source_node",
    "simulation_partition_map",
]

# Type aliases of ``flwr.clientapp.typing`` (not exported by ``flwr.clientapp``):
# ``ClientAppCallable = Callable[[Message, Context], Message]`` and
# ``Mod = Callable[[Message, Context, ClientAppCallable], Message]``, the signature
# ``ClientApp(mods=...)`` accepts. Re-exported rather than redefined, so a change of
# Flower's mod signature shows up as a type error at our mods.
#
# ``Run`` (``flwr.supercore.run``) is the type of ``Grid.set_run``'s argument and of
# ``Grid.run``, and ``NodeInfo`` (the protobuf ``flwr.proto.node_pb2.NodeInfo``) the element
# type of ``Grid.get_nodes()``: Grid subclasses must match both.

#: ``Error.code`` Flower gives a reply when the ClientApp raised
#: (``flwr.common.constant.ErrorCode.CLIENT_APP_RAISED_EXCEPTION``); in-process engines set
#: it too, so callers handle a failed client the same way on every engine.
CLIENT_APP_RAISED_EXCEPTION: int = ErrorCode.CLIENT_APP_RAISED_EXCEPTION


def empty_run(run_id: int) -> Run:
    """A ``Run`` with only ``run_id`` set, for Grids that run outside a SuperLink.

    Relies on the classmethod ``flwr.supercore.run.Run.create_empty(run_id)``.
    """
    return Run.create_empty(run_id)


@contextmanager
def message_identity(run_id: int = 1, node_id: int = 0, task_id: int = 1) -> Iterator[None]:
    """Let ``Message(...)`` be created outside a Flower run; restore the old identity after.

    ``Message.__init__`` stamps ``run_id``, ``src_node_id`` and ``src_task_id`` from the
    process-wide ``flwr.supercore.task_identity.TaskIdentity``, whose getters raise until a
    real run (SuperLink, SuperNode, simulation) sets them. Relies on ``TaskIdentity``'s
    class-level settable properties ``run_id``/``node_id``/``task_id`` and on their storage
    in the class attributes ``_run_id``/``_node_id``/``_task_id`` (``None`` when unset),
    which are read here so that the previous (possibly unset) state comes back exactly.
    The identity is process-global: do not nest this across threads.
    """
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, node_id, task_id
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def set_source_node(message: Message, node_id: int) -> Message:
    """Give a server-made ``message`` the sender ``node_id`` (a synthetic reply, e.g. one group
    mean per group for a strategy that identifies replies by sender) and return it.

    ``Metadata.src_node_id`` has no setter; relies on its storage in
    ``metadata.__dict__["_src_node_id"]``, which its getter reads.
    """
    message.metadata.__dict__["_src_node_id"] = int(node_id)
    return message


def sample_nodes(
    grid: Grid, min_available_nodes: int, sample_size: int
) -> tuple[list[int], list[int]]:
    """Wait until ``max(min_available_nodes, sample_size)`` nodes are connected, then sample.

    Returns ``(sampled node ids, all connected node ids)``, sampled with the ``random``
    module as Flower's own strategies do (so seeding ``random`` reproduces their samples).
    Relies on ``flwr.serverapp.strategy.strategy_utils.sample_nodes(grid,
    min_available_nodes, sample_size)``.
    """
    return strategy_utils.sample_nodes(grid, min_available_nodes, sample_size)


def aggregate_metricrecords(records: list[RecordDict], weighting_metric_name: str) -> MetricRecord:
    """Flower's default metric aggregation: every MetricRecord of ``records``, averaged with
    weights ``record[weighting_metric_name]``, that key left out of the result.

    Relies on ``flwr.serverapp.strategy.strategy_utils.aggregate_metricrecords(records,
    weighting_metric_name)``, the default ``train_metrics_aggr_fn`` and
    ``evaluate_metrics_aggr_fn`` of Flower's strategies; using it keeps our strategies'
    metrics equal to theirs.
    """
    return strategy_utils.aggregate_metricrecords(records, weighting_metric_name)


def log_strategy_start_info(
    num_rounds: int,
    arrays: ArrayRecord,
    train_config: ConfigRecord | None,
    evaluate_config: ConfigRecord | None,
) -> None:
    """Log the start-of-run summary Flower's strategies log (rounds, model size, configs), so
    our strategies' logs read like theirs.

    Relies on ``flwr.serverapp.strategy.strategy_utils.log_strategy_start_info(num_rounds,
    arrays, train_config, evaluate_config)``.
    """
    strategy_utils.log_strategy_start_info(num_rounds, arrays, train_config, evaluate_config)


def simulation_partition_map(grid: Grid, num_nodes: int) -> dict[int, int] | None:
    """Node id -> partition id of a Flower simulation, read without sending a message.

    Relies on ``flwr.server.superlink.fleet.vce.vce_api._register_nodes``: the simulation
    engine creates node ``i`` for partition ``i``, in order, in the link state that the
    ServerApp's ``InMemoryGrid`` holds as ``grid.state``, whose ``nodes`` dict keeps that
    creation order. ``None`` where ``grid`` is not such a Grid (a deployment's), or the state
    does not hold exactly ``num_nodes`` nodes: the caller then asks each node instead.
    """
    nodes = getattr(getattr(grid, "state", None), "nodes", None)
    if not isinstance(nodes, dict) or len(nodes) != num_nodes:
        return None
    return {int(node_id): partition for partition, node_id in enumerate(nodes)}
