"""The engine: an :class:`~flower_suite.simulations.config.ExperimentConfig` run on Flower.

- :mod:`~.task`: :class:`ExperimentTask`, per-process cached data and partitions, the model
  factory, each client's data and the attack plan of ``[attack]`` configs.
- :mod:`~.client_app`: :func:`simulation_client_app`, the ClientApp of every engine.
- :mod:`~.server`: :func:`server_main`, the strategy from the config and ``strategy.start``
  with the round hooks, recording every round.
- :mod:`~.hooks`, :mod:`~.attack_hooks`, :mod:`~.metering`: per-round measurements and the
  byte-counting :class:`MeteredGrid`.
- :mod:`~.recording`: the run directory.
- :mod:`~.runner`: :func:`prepare` (every user-input failure, before Ray) and
  :func:`run_experiment` on Ray; :mod:`~.inprocess`: :func:`run_in_process`, the same without
  Ray.
"""

from flower_suite.simulations.engine.client_app import simulation_client_app
from flower_suite.simulations.engine.hooks import (
    DEFAULT_HOOKS,
    HookContext,
    HookFactory,
    RoundHook,
    TestSetEvaluation,
)
from flower_suite.simulations.engine.inprocess import InProcessGrid, run_in_process
from flower_suite.simulations.engine.metering import MeteredGrid
from flower_suite.simulations.engine.recording import RunRecorder
from flower_suite.simulations.engine.runner import backend_config, prepare, run_experiment
from flower_suite.simulations.engine.server import (
    RunResult,
    build_strategy,
    server_main,
    train_config_record,
)
from flower_suite.simulations.engine.task import ExperimentTask

__all__ = [
    "DEFAULT_HOOKS",
    "ExperimentTask",
    "HookContext",
    "HookFactory",
    "InProcessGrid",
    "MeteredGrid",
    "RoundHook",
    "RunRecorder",
    "RunResult",
    "TestSetEvaluation",
    "backend_config",
    "build_strategy",
    "prepare",
    "run_experiment",
    "run_in_process",
    "server_main",
    "simulation_client_app",
    "train_config_record",
]
