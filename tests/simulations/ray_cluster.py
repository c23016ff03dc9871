"""A real multi-node Ray cluster on loopback, for tests: ``loopback_cluster(nodes=2)``.

Ray binds to the machine's interface address even when told 127.0.0.1, so the cluster lives in
a private network namespace the fixture creates (only ``lo`` exists there): a head node
(``ray start --head --block``) and workers (``ray start --block --address``), each a process
this fixture started. Commands that talk to the cluster run in the namespace through
:meth:`LoopbackCluster.command`. On exit the processes are stopped by the PIDs started here
(SIGTERM, which ``ray start --block`` forwards to its node's processes), any process still in
the namespace (only this fixture's) is killed by PID, and the namespace is deleted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
PORT = 6379  # the namespace is private: no other Ray can hold it
START_TIMEOUT_S = 120.0


def can_create_namespaces() -> bool:
    """Network namespaces need root (CAP_SYS_ADMIN) and iproute2."""
    return shutil.which("ip") is not None and os.geteuid() == 0


@dataclass
class LoopbackCluster:
    namespace: str
    temp_dir: str
    address: str = f"127.0.0.1:{PORT}"
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the cluster's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "RAY_TMPDIR": self.temp_dir, **extra}

    def start_node(self, args: Sequence[str], log: Path) -> None:
        with log.open("wb") as out:
            self.processes.append(
                subprocess.Popen(
                    self.command([RAY, "start", "--block", *args]),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=self.env(),
                )
            )

    def alive_nodes(self) -> int:
        probe = (
            "import ray; ray.init(address='auto', log_to_driver=False); "
            "print(sum(1 for n in ray.nodes() if n['Alive']))"
        )
        done = subprocess.run(
            self.command([sys.executable, "-c", probe]),
            capture_output=True,
            text=True,
            timeout=60,
            env=self.env(RAY_ADDRESS=self.address),
        )
        lines = done.stdout.strip().splitlines()
        return int(lines[-1]) if done.returncode == 0 and lines else 0

    def wait_for(self, nodes: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for proc in self.processes:
                if proc.poll() is not None:
                    raise RuntimeError(f"a ray start process exited ({proc.returncode})")
            if self.alive_nodes() >= nodes:
                return
            time.sleep(1)
        raise TimeoutError(f"the loopback Ray cluster did not reach {nodes} nodes")

    def stop(self) -> None:
        for proc in reversed(self.processes):  # workers first, the head last
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        # Whatever is left in the namespace was started by this fixture: kill it by PID.
        left = subprocess.run(
            ["ip", "netns", "pids", self.namespace], capture_output=True, text=True
        ).stdout.split()
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


@contextlib.contextmanager
def loopback_cluster(nodes: int = 2, cpus_per_node: int = 1) -> Iterator[LoopbackCluster]:
    """A Ray cluster of ``nodes`` nodes on 127.0.0.1 in a fresh network namespace."""
    namespace = f"fs-ray-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    temp_dir = tempfile.mkdtemp(dir="/tmp", prefix="rc")  # short: Unix socket paths
    cluster = LoopbackCluster(namespace, temp_dir)
    try:
        subprocess.run(cluster.command(["ip", "link", "set", "lo", "up"]), check=True)
        logs = Path(temp_dir)
        common = ["--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus_per_node)]
        cluster.start_node(
            [
                "--head",
                "--port",
                str(PORT),
                "--temp-dir",
                temp_dir,
                "--include-dashboard",
                "false",
                "--disable-usage-stats",
                *common,
            ],
            logs / "head.log",
        )
        cluster.wait_for(1)
        for index in range(1, nodes):
            cluster.start_node(
                ["--address", cluster.address, "--disable-usage-stats", *common],
                logs / f"worker{index}.log",
            )
        cluster.wait_for(nodes)
        yield cluster
    finally:
        cluster.stop()
        subprocess.run(["ip", "netns", "delete", namespace], check=False)
        shutil.rmtree(temp_dir, ignore_errors=True)
