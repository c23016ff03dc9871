"""Run an experiment without Ray: every client's ClientApp is called in this process.

The same ``server_main`` and ``simulation_client_app`` as :func:`~flower_suite.simulations.
runner.run_experiment`, over a Grid that hands each message to the destination node's app
in turn (one persistent ``Context`` per node, so client state behaves as on Ray). There is no
parallelism and no Ray start-up, which on a loaded CPU makes a 120-round digits run take
seconds instead of minutes; benchmarks that repeat many small runs use it. Results equal the
Ray runner's wherever aggregation order is fixed (the runner sorts replies by partition).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid

from flower_suite.simulations.config import ExperimentConfig
from flower_suite.simulations.hooks import DEFAULT_HOOKS, HookFactory
from flower_suite.simulations.runner import prepare, simulation_client_app
from flower_suite.simulations.server import RoundCallback, RunResult, server_main

# Node ids unlike partition ids, as in a real federation.
_NODE_OFFSET = 7_001


class InProcessGrid(Grid):
    """Delivers each message to its node's ClientApp, sequentially, in this process."""

    def __init__(self, app: ClientApp, num_nodes: int, run_id: int = 1) -> None:
        self.app = app
        self.run_id = run_id
        self.contexts = {
            _NODE_OFFSET + 13 * p: Context(
                run_id=run_id,
                node_id=_NODE_OFFSET + 13 * p,
                node_config={"partition-id": p, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config={},
            )
            for p in range(num_nodes)
        }

    @property
    def run(self) -> Any:  # type: ignore[override]
        return None

    def set_run(self, run_id: int) -> None:
        self.run_id = run_id

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return Message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError("InProcessGrid only supports send_and_receive")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError("InProcessGrid only supports send_and_receive")

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return [self.app(msg, self.contexts[msg.metadata.dst_node_id]) for msg in messages]


def run_in_process(
    config: ExperimentConfig,
    *,
    hooks: Sequence[HookFactory] = DEFAULT_HOOKS,
    on_round: RoundCallback | None = None,
    quiet: bool = True,
) -> RunResult:
    """Run ``config`` like ``run_experiment(config, record=False)``, without Ray.

    ``quiet`` lowers Flower's per-round INFO logs to warnings, as the runner does.
    """
    from flwr.supercore.task_identity import TaskIdentity

    task = prepare(config)
    grid = InProcessGrid(simulation_client_app(task), config.num_clients)
    # Flower stamps message ids from a task identity that only a real run sets up.
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    if quiet:
        flwr_logger.setLevel(logging.WARNING)
    try:
        return server_main(grid, config, hooks=hooks, on_round=on_round, task=task)
    finally:
        flwr_logger.setLevel(level)
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved
