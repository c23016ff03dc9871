"""The checks across fields of an :class:`ExperimentConfig`, before anything runs.

Value ranges, every registry name and keyword (data set, model, strategy), then the
``[attack]`` and ``[secagg]`` sections
given the sizes they depend on (the client hyper-parameters check themselves: ``ClientConfig``
is a ``TrainConfig``). Every error is a :class:`ConfigError` whose message starts with
the dotted field name.
"""

from __future__ import annotations

import math
import re

from flower_suite.data.partition import SCHEMES
from flower_suite.data.registry import DATASETS
from flower_suite.models import MODELS
from flower_suite.registry import RegistryError
from flower_suite.simulations.config.attack import validate_attack
from flower_suite.simulations.config.backend import validate_backend
from flower_suite.simulations.config.compression import validate_compression
from flower_suite.simulations.config.errors import ConfigError
from flower_suite.simulations.config.experiment import ExperimentConfig
from flower_suite.simulations.config.secagg import validate_secagg
from flower_suite.strategies import STRATEGIES

__all__ = ["DERIVED_STRATEGY_KEYS", "validate"]

# Strategy parameters the runner derives from clients_per_round / evaluate_clients.
DERIVED_STRATEGY_KEYS = (
    "fraction_train",
    "fraction_evaluate",
    "min_train_nodes",
    "min_evaluate_nodes",
    "min_available_nodes",
)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def validate(config: ExperimentConfig) -> None:
    """Value checks across fields, and that every registry name and keyword resolves."""
    _check_name(config.name)
    _check_sizes(config)
    _check_partition(config)
    _check_resources(config)
    _check_lowrank(config)
    _check_registries(config)
    _check_sections(config)
    validate_backend(config.engine, config.watchdog_s, config.ray)


# A run directory is <output_dir>/<name>-<timestamp>: the name must stay one path component.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _check_name(name: str) -> None:
    _check(
        isinstance(name, str) and _NAME.fullmatch(name) is not None and ".." not in name,
        f"name: {name!r} must be 1-100 letters, digits, '.', '_' or '-', starting with a letter "
        "or digit (it names the run directory inside output_dir)",
    )


def _check_sizes(config: ExperimentConfig) -> None:
    _check(config.rounds >= 1, f"rounds: must be >= 1, not {config.rounds}")
    _check(config.num_clients >= 1, f"num_clients: must be >= 1, not {config.num_clients}")
    _check(
        0 <= config.clients_per_round <= config.num_clients,
        f"clients_per_round: must be in [0, num_clients={config.num_clients}], "
        f"not {config.clients_per_round}",
    )
    _check(
        0 <= config.evaluate_clients <= config.num_clients,
        f"evaluate_clients: must be in [0, num_clients={config.num_clients}], "
        f"not {config.evaluate_clients}",
    )
    _check(config.seed >= 0, f"seed: must be >= 0, not {config.seed}")


def _check_partition(config: ExperimentConfig) -> None:
    partition = config.partition
    _check(
        partition.scheme in SCHEMES,
        f"partition.scheme: must be one of {SCHEMES}, not {partition.scheme!r}",
    )
    _check(
        0 <= partition.num_partitions <= config.num_clients,
        f"partition.num_partitions: must be in [0, num_clients={config.num_clients}], "
        f"not {partition.num_partitions}",
    )
    _check(
        _finite(partition.alpha) and partition.alpha > 0,
        f"partition.alpha: must be a finite number > 0, not {partition.alpha}",
    )
    _check(
        partition.classes_per_client >= 1,
        f"partition.classes_per_client: must be >= 1, not {partition.classes_per_client}",
    )
    _check(
        0 < config.data.test_fraction < 1,
        f"data.test_fraction: must be in (0, 1), not {config.data.test_fraction}",
    )


def _check_resources(config: ExperimentConfig) -> None:
    resources = config.resources
    _check(
        _finite(resources.num_cpus) and resources.num_cpus > 0,
        f"resources.num_cpus: must be a finite number > 0, not {resources.num_cpus}",
    )
    _check(
        _finite(resources.num_gpus) and resources.num_gpus >= 0,
        f"resources.num_gpus: must be a finite number >= 0, not {resources.num_gpus}",
    )


def _check_lowrank(config: ExperimentConfig) -> None:
    lowrank = config.lowrank
    _check(
        0 <= lowrank.rank_ratio <= 1,
        f"lowrank.rank_ratio: must be in (0, 1] (0 = full-rank training), not {lowrank.rank_ratio}",
    )
    _check(
        _finite(lowrank.lr_factor) and lowrank.lr_factor > 0,
        f"lowrank.lr_factor: must be a finite number > 0, not {lowrank.lr_factor}",
    )
    if lowrank.enabled:
        _check(
            0 <= lowrank.warmup_rounds < config.rounds,
            f"lowrank.warmup_rounds: must be in [0, rounds={config.rounds}) so that the model "
            f"is factorized during the run, not {lowrank.warmup_rounds}",
        )


def _check_registries(config: ExperimentConfig) -> None:
    for where, registry, named in (
        ("model", MODELS, config.model),
        ("strategy", STRATEGIES, config.strategy),
    ):
        try:
            registry.get(named.name)
            registry.check_kwargs(named.name, named.kwargs, field=where)
        except RegistryError as err:
            message = str(err)
            raise ConfigError(
                message if message.startswith(where) else f"{where}.name: {message}"
            ) from err
    for key in DERIVED_STRATEGY_KEYS:
        _check(
            key not in config.strategy.kwargs,
            f"strategy.{key}: set by the runner from clients_per_round/evaluate_clients; "
            "set those instead",
        )
    for key, value in config.strategy.kwargs.items():
        _check(
            not isinstance(value, float) or math.isfinite(value),
            f"strategy.{key}: must be a finite number, not {value}",
        )
    try:
        DATASETS.get(config.data.dataset)
    except RegistryError as err:
        raise ConfigError(f"data.dataset: {err}") from err


def _check_sections(config: ExperimentConfig) -> None:
    validate_attack(
        config.attack,
        num_clients=config.num_clients,
        sampled_clients=config.sampled_clients,
        rounds=config.rounds,
        strategy=config.strategy.name,
        dataset=config.data.dataset,
    )
    validate_secagg(
        config.secagg,
        sampled_clients=config.sampled_clients,
        strategy=config.strategy.name,
        attack=config.attack,
        num_clients=config.num_clients,
        lowrank_enabled=config.lowrank.enabled,
    )
    validate_compression(
        config.compression,
        secagg_enabled=config.secagg_enabled,
        omniscient_attack=config.attack.name if config.attack.is_omniscient else "",
    )
