"""Run an experiment on Flower's simulation engine with the Ray backend.

Everything that can fail on the user's input (config, data, model/data shapes) is checked
before Ray starts. The ServerApp and ClientApp are the same ones ``flwr run`` starts; here they
are built in-process so the config travels by closure instead of through ``run_config``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from flower_suite.flower_compat import Mod
from flower_suite.simulations.config import ConfigError, ExperimentConfig
from flower_suite.simulations.config.secagg import check_secagg_weights
from flower_suite.simulations.engine.client_app import simulation_client_app
from flower_suite.simulations.engine.hooks import DEFAULT_HOOKS, HookFactory
from flower_suite.simulations.engine.recording import RunRecorder
from flower_suite.simulations.engine.server import (
    RoundCallback,
    RunResult,
    build_strategy,
    server_main,
)
from flower_suite.simulations.engine.task import ExperimentTask
from flower_suite.strategies.contract import ContractError, ExperimentSizes

__all__ = ["backend_config", "prepare", "run_experiment"]


class _DropKnownNoise(logging.Filter):
    """Hide Flower warnings that say nothing to a runner user (we chose these settings)."""

    NOISE = ("`run_simulation` function is deprecated", "fraction_evaluate is set to 0.0")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in self.NOISE)


@contextlib.contextmanager
def _quiet_flower_logs(quiet: bool = True) -> Iterator[None]:
    """Flower's INFO logs lowered to warnings, and its known noise dropped."""
    if not quiet:
        yield
        return
    flwr_logger = logging.getLogger("flwr")
    previous = flwr_logger.level
    noise = _DropKnownNoise()
    flwr_logger.setLevel(logging.WARNING)
    flwr_logger.addFilter(noise)
    try:
        yield
    finally:
        flwr_logger.setLevel(previous)
        flwr_logger.removeFilter(noise)


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
    """Load data, partition, check the model on it and build the strategy with its wrappers:
    every user-input failure happens here, before Ray starts, as a ``ConfigError``.

    The returned task carries the partitions (and small data) to the Ray actors.
    """
    check_resources(config)
    task = ExperimentTask(config)
    load_data(task)
    # The strategy before the partitions: its errors should not wait for partitioning,
    # which imports flwr-datasets (seconds of start-up).
    check_strategy(config, task)
    check_model(task)
    check_secagg_weights(config.secagg, [len(part) for part in task.partitions()])
    return task.preloaded()


def check_resources(config: ExperimentConfig) -> None:
    """Per-client resources this machine can give: Ray would otherwise start no client
    ("ActorPool is empty") and the simulation would never end."""
    resources = config.resources
    gpus = torch.cuda.device_count()
    if resources.num_gpus > gpus:
        seen = f"only {gpus} CUDA device(s)" if gpus else "no CUDA device"
        raise ConfigError(
            f"resources.num_gpus: {resources.num_gpus} GPU per client, but torch sees {seen} "
            "on this machine; set resources.num_gpus = 0 to train on the CPU"
        )
    cores = os.cpu_count() or 1
    if resources.num_cpus > cores:
        raise ConfigError(
            f"resources.num_cpus: {resources.num_cpus} CPUs per client, but this machine has "
            f"{cores}; no client could start"
        )


def load_data(task: ExperimentTask) -> None:
    """Load the experiment's data once (cached); a missing file names ``data.path``."""
    try:
        task.data()
    except FileNotFoundError as err:
        raise ConfigError(f"data.path: {err}") from err


def check_model(task: ExperimentTask) -> None:
    """Run the model on the data once: a mismatch names ``model.name`` (or ``lowrank``, for a
    factorization that does not apply to it)."""
    try:
        task.check_model_fits_data()
    except ValueError as err:  # its messages start with the field (model.name, lowrank)
        raise ConfigError(str(err)) from err


def check_strategy(config: ExperimentConfig, task: ExperimentTask) -> None:
    """Build the configured strategy (with its wrappers) and ask its contract whether it can
    work at the experiment's sizes; the server builds the same one again in the run."""
    try:
        with _quiet_flower_logs():  # the run logs Flower's notes itself; don't print them twice
            strategy = build_strategy(config, task=task)
    except (TypeError, ValueError) as err:
        raise ConfigError(_strategy_field(config, str(err))) from err
    check_sizes = getattr(strategy, "check_sizes", None)
    if check_sizes is None:  # a user-registered strategy that declares no contract
        return
    sizes = ExperimentSizes(
        num_clients=config.num_clients,
        clients_per_round=config.sampled_clients,
        model_size=task.model_size(),
    )
    try:
        check_sizes(sizes)
    except ContractError as err:
        raise ConfigError(str(err)) from err


def _strategy_field(config: ExperimentConfig, message: str) -> str:
    """``strategy.<key>: message`` naming the first configured keyword the message mentions."""
    for key in config.strategy.kwargs:
        if key in message:
            return f"strategy.{key}: {message}"
    return f"strategy: {message}"


def run_experiment(
    config: ExperimentConfig,
    *,
    hooks: Sequence[HookFactory] = DEFAULT_HOOKS,
    client_mods: Sequence[Mod] = (),
    on_round: RoundCallback | None = None,
    output_dir: str | Path | None = None,
    record: bool = True,
    quiet: bool = True,
    prepared: ExperimentTask | None = None,
) -> RunResult:
    """Run ``config`` on the Ray simulation engine and return per-round metrics.

    ``prepared``: the task :func:`prepare` returned for this ``config``, when the caller
    has prepared it already (the CLI does, to report config errors); else it is prepared here.

    ``client_mods`` are Flower mods applied to every client (they can check
    ``context.node_config["partition-id"]`` to act on some clients only). With ``record`` the
    run directory is written under ``output_dir`` (default: ``config.output_dir``).
    ``quiet`` lowers Flower's per-round INFO logs to warnings.
    """
    from flwr.simulation import run_simulation

    task = prepared if prepared is not None else prepare(config)
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

    with _quiet_flower_logs(quiet), warnings.catch_warnings():
        # Ray's notice about a future default; we pin the device per client ourselves.
        warnings.filterwarnings("ignore", message=".*RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO.*")
        run_simulation(
            server_app=server_app,
            client_app=simulation_client_app(task, client_mods),
            num_supernodes=config.num_clients,
            backend_name="ray",
            backend_config=backend_config(config),  # type: ignore[arg-type]
        )
    error = outcome.get("error")
    if isinstance(error, BaseException):
        raise RuntimeError(f"experiment {config.name!r} failed: {error}") from error
    result = outcome.get("result")
    if not isinstance(result, RunResult):
        raise RuntimeError(f"experiment {config.name!r} ended without a result")
    return result
