"""Run an experiment without Ray: every client's ClientApp is called in this process.

The same ``server_main`` and ``simulation_client_app`` as :func:`~flower_suite.simulations.
engine.runner.run_experiment`, over a Grid that hands each message to the destination node's app
in turn (one persistent ``Context`` per node, so client state behaves as on Ray). There is no
parallelism and no Ray start-up, which on a loaded CPU makes a 120-round digits run take
seconds instead of minutes; benchmarks that repeat many small runs use it. Results equal the
Ray runner's wherever aggregation order is fixed (the runner sorts replies by partition).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid

from flower_suite.flower_compat import (
    CLIENT_APP_RAISED_EXCEPTION,
    Mod,
    Run,
    empty_run,
    message_identity,
)
from flower_suite.simulations.config import ExperimentConfig
from flower_suite.simulations.engine.client_app import simulation_client_app
from flower_suite.simulations.engine.hooks import DEFAULT_HOOKS, HookFactory
from flower_suite.simulations.engine.prepare import prepare, quiet_flower_logs
from flower_suite.simulations.engine.server import RoundCallback, RunResult, server_main
from flower_suite.simulations.engine.task import ExperimentTask

__all__ = ["InProcessGrid", "run_in_process", "serve_in_process"]

logger = logging.getLogger(__name__)

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
    def run(self) -> Run:
        return empty_run(self.run_id)

    def set_run(self, run: Run) -> None:
        self.run_id = run.run_id

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return Message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def partition_map(self) -> dict[int, int]:
        """Node id -> partition id, as this engine assigned them."""
        return {node: int(c.node_config["partition-id"]) for node, c in self.contexts.items()}

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError("InProcessGrid only supports send_and_receive")

    def pull_messages(self, *args: Any, **kwargs: Any) -> Iterable[Message]:
        raise NotImplementedError("InProcessGrid only supports send_and_receive")

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Each message's reply, as Flower's simulation engine gives them: a ClientApp that
        raises yields an error reply, and the replies that are not in by ``timeout`` seconds
        (for the whole call) are missing."""
        deadline = None if timeout is None else time.monotonic() + timeout
        replies = []
        for msg in messages:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                logger.warning("node %d: no reply within the timeout", msg.metadata.dst_node_id)
                continue
            reply = self._deliver(msg, left)
            if reply is not None:
                replies.append(reply)
        return replies

    def _deliver(self, msg: Message, timeout: float | None) -> Message | None:
        """The reply of the destination's ClientApp, an error reply if it raised, or None if
        it did not answer within ``timeout`` seconds."""
        context = self.contexts[msg.metadata.dst_node_id]
        outcome: list[Message] = []

        def call() -> None:
            try:
                outcome.append(self.app(msg, context))
            except Exception as err:  # reported as an error reply, as Ray's engine does
                logger.warning("node %d: ClientApp raised %r", msg.metadata.dst_node_id, err)
                reason = f"{type(err)}:<'{err}'>"
                error = Error(code=CLIENT_APP_RAISED_EXCEPTION, reason=reason)
                outcome.append(Message(error, reply_to=msg))

        if timeout is None:
            call()
        else:
            # A daemon thread: a ClientApp that never returns is left behind, not waited on.
            worker = threading.Thread(target=call, daemon=True)
            worker.start()
            worker.join(timeout)
        if not outcome:
            logger.warning("node %d: no reply within the timeout", msg.metadata.dst_node_id)
            return None
        return outcome[0]


def serve_in_process(
    task: ExperimentTask,
    serve: Callable[[Grid], RunResult],
    client_mods: Sequence[Mod] = (),
    *,
    quiet: bool = True,
) -> RunResult:
    """``serve(grid)`` (the runner's ``server_main`` closure) over an :class:`InProcessGrid`
    of ``task``'s clients."""
    grid = InProcessGrid(simulation_client_app(task, client_mods), task.config.num_clients)
    # Flower stamps message ids from a task identity that only a real run sets up.
    with quiet_flower_logs(quiet), message_identity():
        return serve(grid)


def run_in_process(
    config: ExperimentConfig,
    *,
    hooks: Sequence[HookFactory] = DEFAULT_HOOKS,
    on_round: RoundCallback | None = None,
    quiet: bool = True,
    client_mods: Sequence[Mod] = (),
) -> RunResult:
    """Run ``config`` like ``run_experiment(config, record=False)``, without Ray (whatever
    its ``engine`` says).

    ``quiet`` lowers Flower's per-round INFO logs to warnings, as the runner does;
    ``client_mods`` wrap every client, as ``run_experiment``'s.
    """
    task = prepare(config)

    def serve(grid: Grid) -> RunResult:
        return server_main(grid, config, hooks=hooks, on_round=on_round, task=task)

    return serve_in_process(task, serve, client_mods, quiet=quiet)
