"""The Ray a simulation runs on: started here, or a running cluster attached to, never a hang.

:func:`check_ray_environment` runs in ``prepare`` (before anything starts): a ``RAY_TMPDIR``
whose Unix socket paths would pass the kernel's 107-byte limit (Ray then waits for ever for
its own processes), ``ray.init_args`` keys ``ray.init`` does not take, and a cluster address
nothing answers at (Ray retries it for minutes) are refused as ``ConfigError``\\ s naming the
field.

:func:`open_ray` starts or attaches with a deadline (``ray.init`` runs in a daemon thread the
driver stops waiting for), then checks that some node of the cluster can host one client with
``[resources]`` (otherwise Flower's engine ends with "ActorPool is empty" and, before this
module, the process never exited). Flower's Ray backend then finds Ray initialized and uses
it as it is; it disconnects (or stops the Ray started here) when the simulation ends.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flower_suite.simulations.config import ConfigError, ExperimentConfig
from flower_suite.simulations.config.backend import ray_address, split_host_port

__all__ = [
    "BackendError",
    "RaySession",
    "check_ray_environment",
    "close_ray",
    "open_ray",
]

REACH_TIMEOUT_S = 5.0
# sun_path is 108 bytes with its terminating NUL (Linux unix(7)).
UNIX_SOCKET_PATH_LIMIT = 107
# What Ray appends to its temp dir for its longest socket, with a 7-digit pid:
# /ray/session_2026-12-07_05-20-33_726345_1234567/sockets/plasma_store
_SOCKET_SUFFIX = len("/ray/session_2026-12-07_05-20-33_726345_1234567/sockets/plasma_store")


class BackendError(RuntimeError):
    """The simulation backend could not start or failed: the reason, in one message."""


@dataclass(frozen=True)
class RaySession:
    """The Ray a run uses: ``address`` "" when started here for this run."""

    address: str
    nodes: int
    cpus: float
    gpus: float

    @property
    def attached(self) -> bool:
        return bool(self.address)


def check_ray_environment(
    config: ExperimentConfig, environ: Mapping[str, str] | None = None
) -> None:
    """What can be checked about the Ray a ``ray``-engine run will use, before it starts."""
    env = os.environ if environ is None else environ
    temp_dir = str(config.ray.init_args.get("_temp_dir", "") or env.get("RAY_TMPDIR", ""))
    temp_dir = temp_dir or tempfile.gettempdir()
    longest = len(os.path.abspath(temp_dir).encode()) + _SOCKET_SUFFIX
    if longest > UNIX_SOCKET_PATH_LIMIT:
        field = "ray.init_args._temp_dir" if "_temp_dir" in config.ray.init_args else "RAY_TMPDIR"
        raise ConfigError(
            f"{field}: {temp_dir!r} is too long for Ray's Unix sockets ({longest} > "
            f"{UNIX_SOCKET_PATH_LIMIT} bytes; Ray would wait for ever); use a directory of at "
            f"most {UNIX_SOCKET_PATH_LIMIT - _SOCKET_SUFFIX} characters, e.g. under /tmp"
        )
    if config.ray.init_args:
        _check_init_arg_names(config.ray.init_args)
    address = ray_address(config.ray, env)
    host_port = split_host_port(address) if address else None
    if host_port is not None:
        _check_reachable(*host_port, field="ray.address" if config.ray.address else "RAY_ADDRESS")


def _check_init_arg_names(init_args: Mapping[str, Any]) -> None:
    import inspect

    import ray

    known = set(inspect.signature(ray.init).parameters) - {"kwargs"}
    for key in init_args:
        # ray.init also takes private "_..." keywords through **kwargs.
        if key not in known and not key.startswith("_"):
            raise ConfigError(
                f"ray.init_args.{key}: ray.init has no such parameter "
                f"(Ray {ray.__version__}; see its documentation)"
            )


def _check_reachable(host: str, port: int, field: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=REACH_TIMEOUT_S):
            pass
    except OSError as err:
        raise ConfigError(
            f"{field}: nothing answers at {host}:{port} ({err.strerror or err}); start the "
            "cluster with `ray start --head` there, or unset it to run on a local Ray"
        ) from err


def open_ray(config: ExperimentConfig) -> RaySession:
    """Start a local Ray, or attach to ``ray.address`` / ``RAY_ADDRESS`` within
    ``ray.connect_timeout_s``; then check a node can host one client. Raises
    :class:`BackendError` or ``ConfigError``."""
    import ray

    address = ray_address(config.ray)
    if not ray.is_initialized():
        args = _init_args(config, address)
        if address:
            _init_with_deadline(args, config.ray.connect_timeout_s, address)
        else:
            # Started from the main thread: Ray's own processes get a parent-death signal
            # tied to the *thread* that started them, so a helper thread's exit would kill
            # them. A local start does not wait on the network; its one known hang (a long
            # RAY_TMPDIR) is refused by `check_ray_environment`.
            try:
                with warnings.catch_warnings():
                    # Ray's notice about a future default; we pin each client's device.
                    warnings.filterwarnings("ignore", message=".*RAY_ACCEL_ENV_VAR_OVERRIDE.*")
                    ray.init(**args)
            except Exception as err:
                raise BackendError(f"a local Ray could not start: {err}") from err
    try:
        return _check_cluster(config, address)
    except BaseException:
        close_ray()
        raise


def _init_args(config: ExperimentConfig, address: str) -> dict[str, Any]:
    # As Flower's Ray backend would: workers import what this driver imports.
    pythonpath = os.pathsep.join(p for p in sys.path if p)
    if os.environ.get("PYTHONPATH"):
        pythonpath = f"{pythonpath}{os.pathsep}{os.environ['PYTHONPATH']}"
    args: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "runtime_env": {"env_vars": {"PYTHONPATH": pythonpath}},
    }
    if address:
        args["address"] = address
    else:
        args["num_cpus"] = os.cpu_count() or 1
    args.update(config.ray.init_args)
    return args


class _DropThreadNotice(logging.Filter):
    """Ray's note that a driver attached from a helper thread leaves SIGTERM to Python."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


def _init_with_deadline(args: dict[str, Any], timeout_s: float, address: str) -> None:
    """``ray.init(**args)`` attaching to ``address``, given up after ``timeout_s`` (Ray itself
    retries an unresponsive cluster for minutes). Attaching starts no local Ray process, so
    the helper thread may end."""
    import ray

    outcome: list[BaseException | None] = []

    def start() -> None:
        try:
            ray.init(**args)
            outcome.append(None)
        except BaseException as err:  # reported by the waiting thread
            outcome.append(err)

    worker = threading.Thread(target=start, name="ray-init", daemon=True)
    ray_logger = logging.getLogger("ray._private.worker")  # where ray.init logs
    notice = _DropThreadNotice()
    ray_logger.addFilter(notice)
    try:
        with warnings.catch_warnings():  # filters are global: they apply to the thread too
            warnings.filterwarnings("ignore", message=".*RAY_ACCEL_ENV_VAR_OVERRIDE.*")
            worker.start()
            worker.join(timeout_s)
    finally:
        ray_logger.removeFilter(notice)
    where = f"the Ray cluster at {address}"
    if not outcome:
        raise BackendError(
            f"{where} did not answer within {timeout_s:g} s; check `ray status` on a node "
            "of the cluster"
        )
    error = outcome[0]
    if error is not None:
        raise BackendError(f"{where} could not start: {type(error).__name__}: {error}") from error


def _check_cluster(config: ExperimentConfig, address: str) -> RaySession:
    import ray

    alive = [node for node in ray.nodes() if node.get("Alive")]
    per_node = [
        (float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("GPU", 0))) for n in alive
    ]
    want = config.resources
    if not any(cpus >= want.num_cpus and gpus >= want.num_gpus for cpus, gpus in per_node):
        largest = ", ".join(f"{c:g} CPU/{g:g} GPU" for c, g in per_node) or "no live node"
        field = "resources.num_gpus" if want.num_gpus else "resources.num_cpus"
        raise ConfigError(
            f"{field}: no Ray node can host a client with {want.num_cpus:g} CPU and "
            f"{want.num_gpus:g} GPU (nodes: {largest}); lower [resources] or add nodes"
        )
    return RaySession(
        address=address,
        nodes=len(alive),
        cpus=sum(c for c, _ in per_node),
        gpus=sum(g for _, g in per_node),
    )


def close_ray() -> None:
    """Disconnect from (or stop the local) Ray, if this process is connected."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
