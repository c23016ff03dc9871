"""Everything that can fail on the user's input, checked before any engine starts.

:func:`prepare` is what ``flower-suite run`` and ``bench`` (and ``--dry-run``), the ``flwr
run`` app and both engines call first: config resources, data, the strategy with its wrappers
and its contract, the model on the data, secure-aggregation weights and, for the Ray engine,
the Ray environment. Each failure is a ``ConfigError`` naming the field.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator

import torch

from flower_suite.simulations.config import ConfigError, ExperimentConfig
from flower_suite.simulations.config.backend import ray_address
from flower_suite.simulations.config.secagg import check_secagg_weights
from flower_suite.simulations.engine.ray_session import check_ray_environment
from flower_suite.simulations.engine.server import build_strategy
from flower_suite.simulations.engine.task import ExperimentTask
from flower_suite.strategies.contract import ContractError, ExperimentSizes

__all__ = [
    "check_model",
    "check_resources",
    "check_strategy",
    "load_data",
    "prepare",
    "quiet_flower_logs",
]


class _DropKnownNoise(logging.Filter):
    """Hide Flower warnings that say nothing to a runner user (we chose these settings)."""

    NOISE = ("`run_simulation` function is deprecated", "fraction_evaluate is set to 0.0")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in self.NOISE)


@contextlib.contextmanager
def quiet_flower_logs(quiet: bool = True) -> Iterator[None]:
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


def prepare(config: ExperimentConfig) -> ExperimentTask:
    """Load data, partition, check the model on it and build the strategy with its wrappers:
    every user-input failure happens here, before Ray starts, as a ``ConfigError``.

    The returned task carries the partitions (and small data) to the Ray actors.
    """
    check_resources(config)
    if config.engine == "ray":
        check_ray_environment(config)
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
    ("ActorPool is empty"). An attached cluster's nodes are checked when it is attached
    (``ray_session.open_ray``): this machine may be one of many, or none of them."""
    resources = config.resources
    if resources.num_gpus > 1 and resources.num_gpus != int(resources.num_gpus):
        raise ConfigError(
            f"resources.num_gpus: {resources.num_gpus} GPUs per client; Ray gives a task a "
            "fraction of one GPU or a whole number of GPUs"
        )
    if config.engine == "ray" and ray_address(config.ray):
        return
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
        with quiet_flower_logs():  # the run logs Flower's notes itself; don't print them twice
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


_CONFIG_FIELDS = {f.name for f in dataclasses.fields(ExperimentConfig)}


def _strategy_field(config: ExperimentConfig, message: str) -> str:
    """``strategy.<key>: message`` naming the first configured keyword the message mentions;
    a message that already names a config field (a wrapper's: ``compression.name: ...``)
    is kept as it is."""
    head = message.split(":", 1)[0]
    if "." in head and head.split(".", 1)[0] in _CONFIG_FIELDS:
        return message
    for key in config.strategy.kwargs:
        if key in message:
            return f"strategy.{key}: {message}"
    return f"strategy: {message}"
