"""The Ray backend fails fast and never hangs: config checks, bad cluster addresses, a lost
actor (the watchdog), and the partition map read from the engine instead of asked for.

Before issue 13: an unreachable ``RAY_ADDRESS`` made ``flower-suite run`` hang until killed
(Ray retries for minutes, then the ServerApp thread waited for ever), as did a client whose
Ray actor died; 1,000 clients cost a query message each before round 1.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from flower_suite.clients.client_app import client_info
from flower_suite.simulations import load_config, run_experiment
from flower_suite.simulations.config import ConfigError
from flower_suite.simulations.config.backend import RayConfig, validate_backend
from flower_suite.simulations.engine.metering import MeteredGrid
from flower_suite.simulations.engine.node_map import (
    discover_partitions,
    engine_partition_map,
    wait_for_nodes,
)
from flower_suite.simulations.engine.prepare import prepare
from flower_suite.simulations.engine.ray_session import check_ray_environment

CLI = [sys.executable, "-m", "flower_suite.simulations.cli"]
FAST_EXIT_S = 30.0  # the bound for a bad address or resources to end the process


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["engine=spark"], "engine:"),
        (["watchdog_s=-1"], "watchdog_s:"),
        (["watchdog_s=nan"], "watchdog_s:"),
        (["ray.address=ray://head:10001"], "ray.address:"),
        (["ray.address=no-port"], "ray.address:"),
        (["ray.address=host:99999"], "ray.address:"),
        (["ray.connect_timeout_s=0"], "ray.connect_timeout_s:"),
        (["ray.init_args.runtime_env={}"], "ray.init_args.runtime_env:"),
        (["ray.init_args.address='x'"], "ray.init_args.address:"),
        (["ray.address=127.0.0.1:6379", "ray.init_args.num_cpus=4"], "ray.init_args.num_cpus:"),
        (["engine=inprocess", "ray.address=127.0.0.1:6379"], "ray:"),
    ],
)
def test_backend_fields_refused_before_anything_starts(overrides: list[str], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("digits_fedavg", overrides)
    assert str(err.value).startswith(field), err.value


def test_ray_address_from_the_environment_is_checked_and_named() -> None:
    with pytest.raises(ConfigError, match=r"^RAY_ADDRESS: 'garbage' is not HOST:PORT"):
        validate_backend("ray", 600.0, RayConfig(), environ={"RAY_ADDRESS": "garbage"})
    validate_backend("ray", 600.0, RayConfig(), environ={"RAY_ADDRESS": "auto"})
    # The config's address wins over the environment's.
    validate_backend("ray", 0.0, RayConfig(address="h:1"), environ={"RAY_ADDRESS": "garbage"})


def test_unknown_init_arg_refused_by_prepare() -> None:
    config = load_config("digits_fedavg", ["ray.init_args.num_cpu=2"])  # a typo of num_cpus
    with pytest.raises(ConfigError, match=r"^ray.init_args.num_cpu: ray.init has no such"):
        prepare(config)
    prepare(load_config("digits_fedavg", ["ray.init_args._system_config={}"]))  # private: passed


def test_long_ray_tmpdir_refused_with_the_limit() -> None:
    """Ray's sockets under a long temp dir pass the kernel's 107 bytes: Ray waits for ever."""
    config = load_config("digits_fedavg")
    long_dir = "/tmp/" + "d" * 60
    with pytest.raises(ConfigError, match=r"^RAY_TMPDIR: .* too long for Ray's Unix sockets"):
        check_ray_environment(config, environ={"RAY_TMPDIR": long_dir})
    check_ray_environment(config, environ={"RAY_TMPDIR": "/tmp/rtABCDEF"})
    named = dataclasses.replace(config, ray=RayConfig(init_args={"_temp_dir": long_dir}))
    with pytest.raises(ConfigError, match=r"^ray.init_args._temp_dir: "):
        check_ray_environment(named, environ={})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    done = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )
    return done, time.monotonic() - start


def _start_up_s() -> float:
    """A fresh process's cost to import and prepare the demo (no Ray): on a loaded machine it
    alone can pass 30 s, so the bounds below are on the time *beyond* it."""
    done, took = _cli(["run", "digits_fedavg", "--dry-run"], {"RAY_ADDRESS": ""})
    assert done.returncode == 0, done.stdout + done.stderr
    return took


def test_unreachable_ray_address_exits_2_within_seconds() -> None:
    port = _free_port()  # nothing listens there
    start_up = _start_up_s()
    done, took = _cli(["run", "digits_fedavg", "--no-record"], {"RAY_ADDRESS": f"127.0.0.1:{port}"})
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"RAY_ADDRESS: nothing answers at 127.0.0.1:{port}" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert took < start_up + FAST_EXIT_S


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (not a Ray GCS)."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        held = []
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
        for conn in held:
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(5)
    server.close()


def test_address_that_never_answers_ends_with_the_reason(silent_listener: int) -> None:
    """Ray would retry this for minutes; the run gives up after ray.connect_timeout_s."""
    address = f"127.0.0.1:{silent_listener}"
    start_up = _start_up_s()
    args = ["run", "digits_fedavg", "--no-record", "--set", "ray.connect_timeout_s=5"]
    done, took = _cli([*args, "--set", f"ray.address={address}"], {})
    assert done.returncode == 3, done.stdout + done.stderr
    assert f"backend error: the Ray cluster at {address} did not answer within 5 s" in done.stdout
    assert took < start_up + FAST_EXIT_S


def _exit_on_partition_zero(msg: Message, context: Context, call_next: object) -> Message:
    """Kill the Ray actor process serving partition 0 (a lost worker, an OOM kill)."""
    if int(context.node_config["partition-id"]) == 0:
        os._exit(1)
    return call_next(msg, context)  # type: ignore[operator, no-any-return]


@pytest.mark.simulation
def test_a_lost_actor_ends_the_run_with_the_watchdog_reason() -> None:
    config = load_config("digits_fedavg", ["rounds=2", "num_clients=4", "watchdog_s=10"])
    start = time.monotonic()
    # Ray either reports the dead actor (Flower turns it into error replies, which are
    # excluded) or goes silent (the watchdog ends the run): both end, neither hangs.
    try:
        result = run_experiment(config, record=False, client_mods=[_exit_on_partition_zero])
    except RuntimeError as err:
        assert re.search(r"no reply from \d+ node\(s\) for 10 s \(watchdog_s\)", str(err))
    else:
        assert all(math.isfinite(row["test-loss"]) for row in result.rows)
    assert time.monotonic() - start < 480  # Ray start-up on a loaded 2-core machine + 10 s


@pytest.mark.simulation
def test_engine_partition_map_equals_what_every_node_reports() -> None:
    """The map read from Flower's link state (no message) is the one a query to each node
    returns: Flower's simulation creates node i for partition i."""
    num_nodes = 7
    found: dict[str, dict[int, int] | None] = {}
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        nodes = wait_for_nodes(grid, num_nodes)
        found["engine"] = engine_partition_map(MeteredGrid(grid), num_nodes)
        asked = MeteredGrid(grid)
        discover_partitions(asked, nodes)
        found["asked"] = dict(asked.partitions)

    client = ClientApp()

    @client.query()
    def _query(msg: Message, context: Context) -> Message:
        from flwr.app import RecordDict

        return Message(RecordDict({"client-info": client_info(context)}), reply_to=msg)

    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=num_nodes,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0}},
    )
    assert found["engine"] is not None
    assert found["engine"] == found["asked"]
    assert sorted(found["engine"].values()) == list(range(num_nodes))


def test_watchdog_fields_reach_the_written_config(tmp_path: Path) -> None:
    config = load_config("digits_fedavg", ["watchdog_s=30", "engine=inprocess", "rounds=1"])
    result = run_experiment(config, output_dir=tmp_path)
    written = (result.run_dir / "config.toml").read_text()
    assert 'engine = "inprocess"' in written and "watchdog_s = 30" in written
    assert (result.run_dir / "placement.csv").read_text().startswith("partition,host,pid")


def test_cli_engine_option_runs_in_process_and_dry_run_says_where(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from flower_suite.simulations.cli import main

    assert main(["run", "digits_fedavg", "--dry-run", "--engine", "inprocess"]) == 0
    assert "engine: inprocess (every client in this process, no Ray)" in capsys.readouterr().out
    assert main(["run", "digits_fedavg", "--dry-run"]) == 0
    assert "engine: ray (a local Ray started for the run; watchdog 600 s)" in (
        capsys.readouterr().out
    )
    argv = ["run", "digits_fedavg", "--engine", "inprocess", "--set", "rounds=1", "--no-record"]
    assert main(argv) == 0
    assert "│     1 │" in capsys.readouterr().out  # round 1's row of the table
