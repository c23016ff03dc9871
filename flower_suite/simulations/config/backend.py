"""Where an experiment runs: ``engine``, ``watchdog_s`` and the ``[ray]`` table.

``engine = "ray"`` (the default) runs the clients as Ray actors through Flower's simulation
engine; ``engine = "inprocess"`` calls every ClientApp in the driver process (no Ray start-up,
no parallelism: the fastest choice for small experiments and bench grids). Results are the
same on both engines (the server orders replies by partition).

``[ray]`` says which Ray the ``ray`` engine uses::

    [ray]
    address = ""        # "" = RAY_ADDRESS if set, else a local Ray started for this run;
                        # "auto" or "HOST:PORT" = attach to a running cluster (its GCS address)
    init_args = {}      # passed through to ray.init, e.g. {_temp_dir = "/tmp/ray-x"}
    connect_timeout_s = 20.0  # attaching gives up after this, with the reason

A Ray the runner starts itself gets ``num_cpus`` (this machine's cores); an attached cluster
brings its own resources, so ``num_cpus``/``num_gpus`` in ``init_args`` are refused there (Ray
refuses them when connecting). Keys Flower or the runner set themselves are refused
(:data:`RESERVED_INIT_ARGS`), with the field to use instead.

Nothing here imports Ray: the checks run before anything starts.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flower_suite.simulations.config.errors import ConfigError

__all__ = [
    "ENGINES",
    "RESERVED_INIT_ARGS",
    "RayConfig",
    "ray_address",
    "validate_backend",
]

ENGINES = ("ray", "inprocess")

# ray.init keywords the runner or Flower set, and the field that says the same thing.
RESERVED_INIT_ARGS = {
    "address": "ray.address",
    "runtime_env": "nothing: Flower sets the workers' PYTHONPATH through it; install the "
    "package on every node instead",
    "log_to_driver": "--verbose (client logs are shown with Flower's INFO logs)",
}
# Resources of a cluster are the cluster's: Ray refuses these when connecting to one.
CLUSTER_OWNED_INIT_ARGS = ("num_cpus", "num_gpus", "resources", "object_store_memory")

# HOST:PORT with a DNS name, IPv4 address or bracketed IPv6 address.
_HOST_PORT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(?P<port>\d{1,5})")


@dataclass(frozen=True)
class RayConfig:
    """``[ray]``: the Ray the ``ray`` engine starts or attaches to (see the module doc)."""

    address: str = ""
    init_args: Mapping[str, Any] = field(default_factory=dict)
    # Seconds to attach to a cluster before giving up with the reason (Ray retries for minutes).
    connect_timeout_s: float = 20.0


def ray_address(config: RayConfig, environ: Mapping[str, str] | None = None) -> str:
    """The cluster to attach to: ``ray.address``, else ``RAY_ADDRESS``; "" = start a local Ray."""
    env = os.environ if environ is None else environ
    return config.address or env.get("RAY_ADDRESS", "").strip()


def split_host_port(address: str) -> tuple[str, int] | None:
    """``("HOST", PORT)`` of a ``HOST:PORT`` address, None for ``auto``; raises ConfigError
    for anything else (``ray://`` client addresses included)."""
    if address in ("auto", "local"):
        return None
    if address.startswith("ray://"):
        raise ConfigError(
            f"ray.address: {address!r} is a Ray Client address, which Flower's simulation "
            "engine cannot use; give the cluster's GCS address HOST:PORT (what `ray start "
            "--head` prints) and run from a node of the cluster"
        )
    match = _HOST_PORT.fullmatch(address)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ConfigError(
            f"ray.address: {address!r} is not HOST:PORT (e.g. 127.0.0.1:6379) or 'auto'"
        )
    return match["host"].strip("[]"), int(match["port"])


def validate_backend(
    engine: str, watchdog_s: float, ray: RayConfig, environ: Mapping[str, str] | None = None
) -> None:
    """``engine``, ``watchdog_s`` and ``[ray]`` (with ``RAY_ADDRESS``), before anything starts."""
    if engine not in ENGINES:
        raise ConfigError(f"engine: {engine!r} is not one of {', '.join(ENGINES)}")
    if not (isinstance(watchdog_s, int | float) and math.isfinite(watchdog_s) and watchdog_s >= 0):
        raise ConfigError(
            f"watchdog_s: must be a finite number of seconds >= 0 (0 = no watchdog), "
            f"not {watchdog_s!r}"
        )
    timeout = ray.connect_timeout_s
    if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
        raise ConfigError(
            f"ray.connect_timeout_s: must be a number of seconds > 0, not {timeout!r}"
        )
    if not isinstance(ray.init_args, Mapping):
        raise ConfigError(f"ray.init_args: expected a table, got {ray.init_args!r}")
    if engine == "inprocess" and (ray.address or ray.init_args):
        raise ConfigError(
            'ray: the [ray] table is set but engine = "inprocess" runs without Ray; '
            'remove it or set engine = "ray"'
        )
    address = ray_address(ray, environ)
    source = "ray.address" if ray.address else "RAY_ADDRESS"
    try:
        if address:
            split_host_port(address)
    except ConfigError as err:
        raise ConfigError(str(err).replace("ray.address", source, 1)) from err
    for key in ray.init_args:
        if key in RESERVED_INIT_ARGS:
            raise ConfigError(
                f"ray.init_args.{key}: set by the runner; use {RESERVED_INIT_ARGS[key]}"
            )
        if address and key in CLUSTER_OWNED_INIT_ARGS:
            raise ConfigError(
                f"ray.init_args.{key}: an attached cluster ({source} = {address!r}) brings its "
                "own resources; Ray refuses them when connecting (set them on `ray start`)"
            )
