"""The ServerApp and ClientApp that ``flwr run`` starts (declared in pyproject.toml).

They run the same code as ``flower-suite run``; the experiment comes from ``run_config``:
``experiment`` names a packaged preset or a TOML path, and ``overrides`` holds ``--set``
style assignments separated by spaces (``flwr run`` only accepts keys declared in
pyproject.toml, so the experiment's own fields travel inside that one string)::

    flwr run . local --stream --federation-config "num-supernodes=10" \\
        --run-config "experiment='digits_fedavg' overrides='rounds=5 client.lr=0.05'"

Any other ``run_config`` key (from a user's own pyproject) is applied as a dotted override.

``num-supernodes`` must equal the experiment's ``num_clients`` (one client per partition).
Run directories go to ``$FLOWER_SUITE_OUTPUT_DIR`` if set, else the config's ``output_dir``.
"""

from __future__ import annotations

import functools
import os
import shlex
import threading
from collections.abc import Mapping
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from flower_suite.clients.client_app import ClientData, partition_id_of
from flower_suite.clients.fault_mod import fault_mod, wants_fault
from flower_suite.simulations.config import ExperimentConfig, load_config
from flower_suite.simulations.engine.client_app import simulation_client_app
from flower_suite.simulations.engine.prepare import prepare
from flower_suite.simulations.engine.recording import RunRecorder
from flower_suite.simulations.engine.server import server_main
from flower_suite.simulations.engine.task import ExperimentTask
from flower_suite.simulations.engine.watchdog import WatchedGrid

DEFAULT_EXPERIMENT = "digits_fedavg"
OUTPUT_DIR_ENV = "FLOWER_SUITE_OUTPUT_DIR"


def config_from_run_config(run_config: Mapping[str, Any]) -> ExperimentConfig:
    """Experiment ``run_config["experiment"]`` with the other keys applied as overrides."""
    experiment = str(run_config.get("experiment", DEFAULT_EXPERIMENT))
    assignments = shlex.split(str(run_config.get("overrides", "")))
    values = {k: v for k, v in run_config.items() if k not in ("experiment", "overrides")}
    return load_config(experiment, assignments, values)


@functools.lru_cache(maxsize=4)
def _task(run_config_items: tuple[tuple[str, Any], ...]) -> ExperimentTask:
    return ExperimentTask(config_from_run_config(dict(run_config_items)))


def task_for(context: Context) -> ExperimentTask:
    """The (cached) experiment task of this run."""
    return _task(tuple(sorted(context.run_config.items())))


def _data_fn(context: Context) -> ClientData:
    task = task_for(context)
    partitions = int(context.node_config.get("num-partitions", task.config.num_clients))
    if partitions != task.config.num_clients:
        raise ValueError(
            f"the federation has {partitions} supernodes but the experiment has "
            f"num_clients={task.config.num_clients}; set num-supernodes to match"
        )
    return task.client_data(partition_id_of(context))


@functools.lru_cache(maxsize=4)
def _client_app(run_config_items: tuple[tuple[str, Any], ...]) -> ClientApp:
    task = _task(run_config_items)
    return simulation_client_app(task, base_data_fn=_data_fn)


def _delegate(msg: Message, context: Context) -> Message:
    # The experiment (and so the attack plan, FedMA handlers, ...) comes from the run
    # config, known only per call: build the same ClientApp the runner uses, once per run.
    app = _client_app(tuple(sorted(context.run_config.items())))
    if wants_fault(context):
        # A node whose --node-config sets `fault` misbehaves on purpose (testing aid).
        return fault_mod(msg, context, app)
    return app(msg, context)


client_app = ClientApp()
for _register in (
    client_app.train(),
    client_app.evaluate(),
    client_app.query(),
    client_app.train("fedma"),
    client_app.evaluate("fedma"),
):
    _register(_delegate)

server_app = ServerApp()


@server_app.main()
def _main(grid: Grid, context: Context) -> None:
    config = config_from_run_config(context.run_config)
    task = prepare(config)  # the checks `flower-suite run` makes, before any round
    recorder = RunRecorder.create(os.environ.get(OUTPUT_DIR_ENV, config.output_dir), config.name)
    # The watchdog: a federation that stops answering ends the run with the reason after
    # `watchdog_s` instead of waiting out Flower's round timeout (an hour by default).
    watched = WatchedGrid(grid, threading.Event(), stall_s=config.watchdog_s)
    server_main(watched, config, recorder=recorder, task=task)
