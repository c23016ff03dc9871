"""Run an experiment on the engine its config names: Flower's Ray simulation engine
(``engine = "ray"``, the default) or the in-process engine (``engine = "inprocess"``).

Everything that can fail on the user's input is checked first (:func:`~flower_suite.
simulations.engine.prepare.prepare`). On Ray, the runner starts a local Ray or attaches to a
cluster itself, with a deadline (:mod:`~flower_suite.simulations.engine.ray_session`), and the
server talks to the clients through a :class:`~flower_suite.simulations.engine.watchdog.
WatchedGrid`: when Flower's engine fails, or no reply comes for ``watchdog_s`` seconds, the run
ends with the reason instead of hanging. The ServerApp and ClientApp are the ones ``flwr run``
starts; here they are built in-process so the config travels by closure.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from flower_suite.flower_compat import Mod
from flower_suite.simulations.config import ExperimentConfig
from flower_suite.simulations.engine.client_app import simulation_client_app
from flower_suite.simulations.engine.hooks import DEFAULT_HOOKS, HookFactory
from flower_suite.simulations.engine.inprocess import serve_in_process
from flower_suite.simulations.engine.prepare import (
    check_model,
    check_resources,
    check_strategy,
    load_data,
    prepare,
    quiet_flower_logs,
)
from flower_suite.simulations.engine.ray_session import BackendError, close_ray, open_ray
from flower_suite.simulations.engine.recording import RunRecorder
from flower_suite.simulations.engine.server import RoundCallback, RunResult, server_main
from flower_suite.simulations.engine.task import ExperimentTask
from flower_suite.simulations.engine.watchdog import WatchedGrid

__all__ = [
    "BackendError",
    "backend_config",
    "check_model",
    "check_resources",
    "check_strategy",
    "load_data",
    "prepare",
    "run_experiment",
]

# How long the driver waits for the server thread to notice a failed engine and stop.
SERVER_STOP_TIMEOUT_S = 10.0

Serve = Callable[[Grid], RunResult]


def backend_config(config: ExperimentConfig) -> dict[str, dict[str, float | int | str | bool]]:
    """Flower's Ray backend settings: per-client resources from the config (Ray itself is
    started, or attached to, by the runner before the simulation)."""
    return {
        "client_resources": {
            "num_cpus": config.resources.num_cpus,
            "num_gpus": config.resources.num_gpus,
        },
    }


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
    """Run ``config`` on its engine and return per-round metrics.

    ``prepared``: the task :func:`prepare` returned for this ``config``, when the caller
    has prepared it already (the CLI does, to report config errors); else it is prepared here.

    ``client_mods`` are Flower mods applied to every client (they can check
    ``context.node_config["partition-id"]`` to act on some clients only). With ``record`` the
    run directory is written under ``output_dir`` (default: ``config.output_dir``).
    ``quiet`` lowers Flower's per-round INFO logs to warnings.

    Raises ``ConfigError`` (bad input), :class:`BackendError` (Ray could not start or the
    engine failed) or ``RuntimeError`` (the run itself failed, e.g. stalled): never hangs.
    """
    task = prepared if prepared is not None else prepare(config)
    recorder = RunRecorder.create(output_dir or config.output_dir, config.name) if record else None

    def serve(grid: Grid) -> RunResult:
        return server_main(
            grid, config, hooks=hooks, recorder=recorder, on_round=on_round, task=task
        )

    if config.engine == "inprocess":
        return serve_in_process(task, serve, client_mods, quiet=quiet)
    return _run_on_ray(task, serve, client_mods, quiet=quiet)


def _run_on_ray(
    task: ExperimentTask, serve: Serve, client_mods: Sequence[Mod], *, quiet: bool
) -> RunResult:
    from flwr.simulation import run_simulation

    config = task.config
    outcome: dict[str, RunResult | BaseException] = {}
    finished = threading.Event()
    abort = threading.Event()
    grids: list[WatchedGrid] = []
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        try:
            grids.append(WatchedGrid(grid, abort, stall_s=config.watchdog_s))
            outcome["result"] = serve(grids[-1])
        except BaseException as err:  # surfaced to the caller below
            outcome["error"] = err
            raise
        finally:
            finished.set()

    open_ray(config)
    try:
        with quiet_flower_logs(quiet), warnings.catch_warnings():
            # Ray's notice about a future default; we pin the device per client ourselves.
            warnings.filterwarnings("ignore", message=".*RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO.*")
            run_simulation(
                server_app=server_app,
                client_app=simulation_client_app(task, client_mods),
                num_supernodes=config.num_clients,
                backend_name="ray",
                backend_config=backend_config(config),  # type: ignore[arg-type]
            )
    except Exception as err:
        if "error" not in outcome:  # the engine failed, not the server: stop the server
            reason = _root_cause(err)
            for grid in grids:
                grid.stop(f"the simulation engine failed: {reason}")
            abort.set()
            finished.wait(SERVER_STOP_TIMEOUT_S)
            raise BackendError(
                f"experiment {config.name!r}: the simulation engine failed: {reason}"
            ) from err
    finally:
        close_ray()
    return _result(config, outcome)


def _root_cause(err: BaseException) -> str:
    """The innermost exception of a chain, as ``Type: message`` (Flower wraps the engine's
    own error in "An error was encountered. Ending simulation.")."""
    while err.__cause__ is not None:
        err = err.__cause__
    return f"{type(err).__name__}: {err}"


def _result(config: ExperimentConfig, outcome: dict[str, RunResult | BaseException]) -> RunResult:
    error = outcome.get("error")
    if isinstance(error, BaseException):
        raise RuntimeError(f"experiment {config.name!r} failed: {error}") from error
    result = outcome.get("result")
    if not isinstance(result, RunResult):
        raise RuntimeError(f"experiment {config.name!r} ended without a result")
    return result
