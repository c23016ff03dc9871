"""Run an experiment on Flower's simulation engine with the Ray backend.

Everything that can fail on the user's input (config, data, model/data shapes) is checked
before Ray starts. The ServerApp and ClientApp are the same ones ``flwr run`` starts; here they
are built in-process so the config travels by closure instead of through ``run_config``.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from flwr.app import Context
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod
from flwr.serverapp import Grid, ServerApp

from flower_suite.clients.client_app import (
    DataFn,
    TrainFn,
    default_train,
    make_client_app,
    partition_id_of,
    set_torch_threads,
)
from flower_suite.clients.fedma_client import add_fedma_handlers
from flower_suite.clients.secagg_mod import secagg_mod
from flower_suite.simulations.config import ExperimentConfig
from flower_suite.simulations.hooks import DEFAULT_HOOKS, HookFactory
from flower_suite.simulations.recording import RunRecorder
from flower_suite.simulations.secagg_config import check_secagg_weights, secagg_enabled
from flower_suite.simulations.server import RoundCallback, RunResult, server_main
from flower_suite.simulations.task import ExperimentTask
from flower_suite.simulations.threats import client_threat


def simulation_client_app(
    task: ExperimentTask, mods: Sequence[Mod] = (), base_data_fn: DataFn | None = None
) -> ClientApp:
    """The torch ClientApp for ``task``: partition from ``partition-id``, model from config.

    ``mods`` wrap every client (attacks, compression, secure aggregation, ...). With an
    ``[attack]`` section the task's attack plan adds the attacker pieces
    (``threats.client_threat``): only the attacker partitions act on them.
    """
    threads = max(1, int(task.config.resources.num_cpus))

    def model_fn(context: Context):
        set_torch_threads(threads)
        return task.build_model()

    def data_fn(context: Context):
        return task.client_data(partition_id_of(context))

    if base_data_fn is not None:  # the `flwr run` app checks the federation size first
        data_fn = base_data_fn

    # A client given no GPU share trains on the CPU even where GPUs are visible.
    device = "cpu" if task.config.resources.num_gpus == 0 else None
    train_fn: TrainFn = default_train
    plan = task.threat_plan()
    if plan is not None:  # [attack]: attacker partitions attack, the others stay honest
        threat = client_threat(plan, task.config.seed)
        data_fn = threat.wrap_data_fn(data_fn)
        mods = [*threat.mods, *mods]
        train_fn = threat.train_fn
    if secagg_enabled(task.config):  # [secagg]: every client masks its update
        mods = [*mods, secagg_mod]
    app = make_client_app(
        model_fn,
        data_fn,
        defaults=task.train_config,
        seed=task.config.seed,
        device=device,
        mods=mods,
        train_fn=train_fn,
    )
    # FedMA's layer-wise steps arrive as `train.fedma` / `evaluate.fedma` messages; the
    # handlers answer only those, so every app can carry them, except a secure one: a FedMA
    # reply is a trained layer in clear (secagg_mod refuses such messages as well).
    if not secagg_enabled(task.config):
        add_fedma_handlers(
            app, model_fn, data_fn, defaults=task.train_config, seed=task.config.seed, device=device
        )
    return app


class _DropKnownNoise(logging.Filter):
    """Hide Flower warnings that say nothing to a runner user (we chose these settings)."""

    NOISE = ("`run_simulation` function is deprecated", "fraction_evaluate is set to 0.0")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in self.NOISE)


def backend_config(config: ExperimentConfig) -> dict[str, dict[str, float | int | str | bool]]:
    """Ray backend settings: per-client resources from the config."""
    return {
        "client_resources": {
            "num_cpus": config.resources.num_cpus,
            "num_gpus": config.resources.num_gpus,
        },
        "init_args": {"num_cpus": os.cpu_count() or 1, "log_to_driver": False},
    }


def prepare(config: ExperimentConfig) -> ExperimentTask:
    """Load data, partition and check the model on it: every user-input failure happens here.

    The returned task carries the partitions (and small data) to the Ray actors.
    """
    task = ExperimentTask(config)
    task.check_model_fits_data()
    check_secagg_weights(config, [len(part) for part in task.partitions()])
    return task.preloaded()


def run_experiment(
    config: ExperimentConfig,
    *,
    hooks: Sequence[HookFactory] = DEFAULT_HOOKS,
    client_mods: Sequence[Mod] = (),
    on_round: RoundCallback | None = None,
    output_dir: str | Path | None = None,
    record: bool = True,
    quiet: bool = True,
) -> RunResult:
    """Run ``config`` on the Ray simulation engine and return per-round metrics.

    ``client_mods`` are Flower mods applied to every client (they can check
    ``context.node_config["partition-id"]`` to act on some clients only). With ``record`` the
    run directory is written under ``output_dir`` (default: ``config.output_dir``).
    ``quiet`` lowers Flower's per-round INFO logs to warnings.
    """
    from flwr.simulation import run_simulation

    task = prepare(config)
    recorder = RunRecorder.create(output_dir or config.output_dir, config.name) if record else None
    outcome: dict[str, RunResult | BaseException] = {}
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        try:
            outcome["result"] = server_main(
                grid, config, hooks=hooks, recorder=recorder, on_round=on_round, task=task
            )
        except BaseException as err:  # surfaced to the caller below
            outcome["error"] = err
            raise

    flwr_logger = logging.getLogger("flwr")
    previous = flwr_logger.level
    noise = _DropKnownNoise()
    if quiet:
        flwr_logger.setLevel(logging.WARNING)
        flwr_logger.addFilter(noise)
    try:
        with warnings.catch_warnings():
            # Ray's notice about a future default; we pin the device per client ourselves.
            warnings.filterwarnings("ignore", message=".*RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO.*")
            run_simulation(
                server_app=server_app,
                client_app=simulation_client_app(task, client_mods),
                num_supernodes=config.num_clients,
                backend_name="ray",
                backend_config=backend_config(config),  # type: ignore[arg-type]
            )
    finally:
        flwr_logger.setLevel(previous)
        flwr_logger.removeFilter(noise)
    if "error" in outcome:
        raise RuntimeError(f"experiment {config.name!r} failed: {outcome['error']}") from outcome[
            "error"
        ]  # type: ignore[misc]
    if "result" not in outcome:
        raise RuntimeError(f"experiment {config.name!r} ended without a result")
    return outcome["result"]  # type: ignore[return-value]
