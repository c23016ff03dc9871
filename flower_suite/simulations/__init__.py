"""Experiments on Flower's Ray simulation engine: config, runner, hooks, CLI."""

from flower_suite.simulations.config import (
    ConfigError,
    ExperimentConfig,
    config_from_dict,
    load_config,
)
from flower_suite.simulations.hooks import (
    DEFAULT_HOOKS,
    HookContext,
    MeteredGrid,
    RoundHook,
    TestSetEvaluation,
)
from flower_suite.simulations.runner import run_experiment
from flower_suite.simulations.server import RunResult, server_main
from flower_suite.simulations.task import ExperimentTask

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
    "run_experiment",
    "server_main",
]
