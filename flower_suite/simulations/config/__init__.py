"""The experiment config: one TOML file, typed and validated before anything runs.

- :mod:`~.errors`: :class:`ConfigError` (every message starts with the dotted field name).
- :mod:`~.sections`: the plain sections (``[data]``, ``[partition]``, ``[client]``,
  ``[resources]``, ``[lowrank]``) and :class:`NamedConfig` (``[model]``, ``[strategy]``).
- :mod:`~.attack` and :mod:`~.secagg`: the ``[attack]`` and ``[secagg]`` sections, each
  validated given the sizes it depends on.
- :mod:`~.backend`: ``engine``, ``watchdog_s`` and the ``[ray]`` table (:class:`RayConfig`).
- :mod:`~.experiment`: :class:`ExperimentConfig`, the whole experiment (schema there).
- :mod:`~.validation`: the checks across fields and registries.
- :mod:`~.loading`: TOML, ``--set`` overrides, packaged presets -> a validated config.

Nothing here imports the engine: a config is checked without data, models or Ray.
"""

from flower_suite.simulations.config.attack import AttackConfig
from flower_suite.simulations.config.backend import ENGINES, RayConfig
from flower_suite.simulations.config.errors import ConfigError
from flower_suite.simulations.config.experiment import ExperimentConfig
from flower_suite.simulations.config.loading import (
    PRESETS_DIR,
    apply_overrides,
    config_from_dict,
    load_config,
    parse_override,
    presets,
    resolve_experiment,
    set_value,
)
from flower_suite.simulations.config.sections import (
    ClientConfig,
    DataConfig,
    LowRankConfig,
    NamedConfig,
    PartitionConfig,
    ResourcesConfig,
)
from flower_suite.simulations.config.validation import validate

__all__ = [
    "ENGINES",
    "PRESETS_DIR",
    "AttackConfig",
    "ClientConfig",
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "LowRankConfig",
    "NamedConfig",
    "PartitionConfig",
    "RayConfig",
    "ResourcesConfig",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "parse_override",
    "presets",
    "resolve_experiment",
    "set_value",
    "validate",
]
