"""A real deployment on loopback: one ``flower-superlink``, four ``flower-supernode`` processes,
``flwr run`` of a small app using ``SecAggPlus`` + ``secagg_mod``; one SuperNode is killed in
the middle of the protocol (while it trains, after it has shared its keys: the expensive case,
its mask key must be reconstructed). The round must still give the exact weighted mean of the
three survivors' updates.

Private ports, a private ``FLWR_HOME``; every process started here is killed in ``finally``.
Each ``flwr-clientapp`` process imports torch, and every stage starts one per node, so the
per-stage timeout (which the survivors' masked-input stage waits out after the kill) is 45 s:
about 70 s on an idle 2-core machine, longer under load.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.simulation

NODES = 4
HUNG = 2  # partition id of the node that gets killed
SIZE = 500

APP = '''
"""Secure-aggregation deployment test app (written by tests/secagg/test_secagg_deployment.py)."""
import json
import os
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from flower_suite.clients.secagg_mod import secagg_mod
from flower_suite.strategies.secagg import SecAggPlus

SIZE = {size}


def update(pid: int) -> np.ndarray:
    return np.random.default_rng(pid).uniform(-0.5, 0.5, SIZE)


client_app = ClientApp(mods=[secagg_mod])


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    pid = int(context.node_config["partition-id"])
    Path(os.environ["SECAGG_MARKERS"], f"training-{{pid}}").touch()
    if int(context.node_config.get("hang", 0)):
        time.sleep(600)  # killed by the test while here
    arrays = msg.content["arrays"]
    local = arrays["w"].numpy() + update(pid).astype(np.float32)
    content = RecordDict(
        {{
            "arrays": ArrayRecord({{"w": Array(local)}}),
            "metrics": MetricRecord({{"num-examples": pid + 1}}),
            "client-info": ConfigRecord({{"partition-id": pid}}),
        }}
    )
    return Message(content=content, reply_to=msg)


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    n = {nodes}
    deadline = time.monotonic() + 60
    while len(list(grid.get_node_ids())) < n and time.monotonic() < deadline:
        time.sleep(0.2)
    strategy = SecAggPlus(
        FedAvg(min_available_nodes=n, min_train_nodes=n, fraction_evaluate=0.0),
        num_shares=1.0,
        reconstruction_threshold=3,
        clipping_range=1.0,
        quantization_range=2**16,
        max_weight=100,
        stochastic_rounding=False,  # round to nearest: error at most half a step
        timeout=45.0,
    )
    result = strategy.start(
        grid, ArrayRecord({{"w": Array(np.zeros(SIZE, np.float32))}}), num_rounds=1, timeout=30
    )
    record = strategy.records[1]
    out = {{
        "w": result.arrays["w"].numpy().tolist(),
        "survivors": record.survivors,
        "dropped": record.dropped,
        "aborted": record.aborted,
    }}
    Path(os.environ["SECAGG_OUT"]).write_text(json.dumps(out))
'''

PYPROJECT = """
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "secagg-deploy-test"
version = "1.0.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "flower-suite"

[tool.flwr.app.components]
serverapp = "secagg_deploy_app:server_app"
clientapp = "secagg_deploy_app:client_app"

[tool.flwr.app.config]
rounds = 1
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _kill(proc: subprocess.Popen) -> None:
    """Kill a process we started and its children (own session, so its own group)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def test_deployment_survives_a_supernode_killed_mid_protocol(tmp_path: Path) -> None:
    # Prepare: the app, a private FLWR_HOME with a connection to our SuperLink
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "secagg_deploy_app.py").write_text(APP.format(size=SIZE, nodes=NODES))
    (app_dir / "pyproject.toml").write_text(PYPROJECT)
    markers = tmp_path / "markers"
    markers.mkdir()
    out_file = tmp_path / "result.json"
    home = tmp_path / "flwr-home"
    home.mkdir()
    port = _free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "deploy"\n\n[superlink.deploy]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "SECAGG_MARKERS": str(markers),
        "SECAGG_OUT": str(out_file),
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []

    def start(name: str, args: list[str]) -> subprocess.Popen:
        log = (logs / f"{name}.log").open("w")
        proc = subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        procs.append(proc)
        return proc

    try:
        start(
            "superlink",
            [
                str(bin_dir / "flower-superlink"),
                "--insecure",
                "--disable-runtime-dependency-installation",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--control-api-address",
                f"127.0.0.1:{_free_port()}",
            ],
        )
        _wait_for(lambda: _port_open(port), 30, "the SuperLink")
        nodes = {}
        for pid in range(NODES):
            nodes[pid] = start(
                f"supernode-{pid}",
                [
                    str(bin_dir / "flower-supernode"),
                    "--insecure",
                    "--superlink",
                    f"127.0.0.1:{port}",
                    "--port",
                    str(_free_port()),
                    "--node-config",
                    f"partition-id={pid} hang={int(pid == HUNG)}",
                ],
            )
        # Execute: submit the run, kill the hung node once it is training (stage 3)
        run = start("flwr-run", [str(bin_dir / "flwr"), "run", str(app_dir), "deploy", "--stream"])
        _wait_for(lambda: (markers / f"training-{HUNG}").exists(), 240, "stage 3 on the hung node")
        _kill(nodes[HUNG])
        _wait_for(out_file.exists, 240, "the ServerApp's result")
        run.wait(timeout=30)
    except (TimeoutError, subprocess.TimeoutExpired) as err:
        details = "\n".join(
            f"--- {p.name}\n{p.read_text()[-2500:]}" for p in sorted(logs.iterdir())
        )
        raise AssertionError(f"{err}\n{details}") from err
    finally:
        for proc in reversed(procs):
            _kill(proc)

    # Assert: three survivors, the killed node dropped at the masked-input stage, exact mean
    result = json.loads(out_file.read_text())
    assert not result["aborted"], result["aborted"]
    assert len(result["survivors"]) == NODES - 1
    assert len(result["dropped"]["masked_input"]) == 1
    alive = [pid for pid in range(NODES) if pid != HUNG]
    weights = np.array([pid + 1 for pid in alive], dtype=np.float64)
    updates = np.stack([np.random.default_rng(pid).uniform(-0.5, 0.5, SIZE) for pid in alive])
    expected = (weights[:, None] * updates).sum(0) / weights.sum()
    step = 2.0 / (2**16 - 1)
    assert np.abs(np.asarray(result["w"]) - expected).max() <= step / 2 + 1e-6
