"""Experiments on Flower's simulation engine: config, engine, attack runs, benchmarks, CLI.

- :mod:`~flower_suite.simulations.config`: one TOML file -> a validated
  :class:`ExperimentConfig` (no data, no Ray).
- :mod:`~flower_suite.simulations.threats`: the ``[attack]`` section made into ClientApp and
  Grid pieces (the seeded threat plan).
- :mod:`~flower_suite.simulations.engine`: the task, ClientApp, ``server_main``, round hooks,
  run directory, and the Ray and in-process runners.
- :mod:`~flower_suite.simulations.bench`: grids of experiments (``flower-suite bench``).
- :mod:`~flower_suite.simulations.cli` (``flower-suite``) and
  :mod:`~flower_suite.simulations.flwr_app` (``flwr run``): the two entry points.

Each package imports only those listed before it.
"""

from flower_suite.simulations.config import (
    ConfigError,
    ExperimentConfig,
    config_from_dict,
    load_config,
)
from flower_suite.simulations.engine import (
    DEFAULT_HOOKS,
    ExperimentTask,
    HookContext,
    MeteredGrid,
    RoundHook,
    RunResult,
    TestSetEvaluation,
    prepare,
    run_experiment,
    server_main,
)

__all__ = [
    "DEFAULT_HOOKS",
    "ConfigError",
    "ExperimentConfig",
    "ExperimentTask",
    "HookContext",
    "MeteredGrid",
    "RoundHook",
    "RunResult",
    "TestSetEvaluation",
    "config_from_dict",
    "load_config",
    "prepare",
    "run_experiment",
    "server_main",
]
