"""A real Flower federation on loopback, for deployment tests: one ``flower-superlink`` and N
``flower-supernode`` processes, each node given its partition through ``--node-config``.

- Private ports (free ones picked at start), a private ``FLWR_HOME`` holding one connection,
  ``deploy``, that ``flwr run`` uses; the SuperLink keeps its state in a SQLite file so it can
  be restarted between runs (:meth:`Federation.restart_superlink`).
- Insecure, or TLS (``tls=True``): a CA and a server certificate for ``127.0.0.1`` are made at
  start with the ``cryptography`` package and passed as ``--ssl-ca-certfile`` /
  ``--ssl-certfile`` / ``--ssl-keyfile`` to the SuperLink and ``--root-certificates`` to the
  SuperNodes and to ``flwr`` (``root-certificates`` in the connection).
- Every process is started in its own session and stopped by the PID this module started
  (its process group: the ``flwr-serverapp`` / ``flwr-clientapp`` children go with it), never
  by name. Every wait is bounded; a timeout raises with the tail of every log.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; ``TimeoutError`` naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Stop a process this module started, with its children (its own process group): SIGTERM,
    then SIGKILL after ``grace`` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    # The group may outlive its leader (a ClientApp still running): kill what is left.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def write_certificates(directory: Path) -> dict[str, Path]:
    """A self-signed CA and a server certificate for 127.0.0.1 / localhost signed by it (PEM)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flower-suite test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": directory / "ca.pem", "cert": directory / "server.pem"}
    paths["key"] = directory / "server.key"
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@dataclass
class RunOutcome:
    """What one ``flwr run`` left: its exit code, its output and the run directory (if any)."""

    returncode: int
    output: str
    run_dir: Path | None
    wall_s: float


@dataclass
class PendingRun:
    """A ``flwr run`` process started by :meth:`Federation.submit`."""

    proc: subprocess.Popen[bytes]
    log: Path
    before: set[Path]
    started: float


@dataclass
class Federation:
    """A SuperLink and ``nodes`` SuperNodes under ``root`` (see the module docstring).

    ``node_config(i)`` gives extra ``--node-config`` entries for node ``i`` (e.g. a fault).
    """

    root: Path
    nodes: int
    tls: bool = False
    node_config: Callable[[int], Mapping[str, object]] = lambda _i: {}
    port: int = 0
    supernodes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    superlink: subprocess.Popen[bytes] | None = None
    node_config_override: dict[int, dict[str, object]] = field(default_factory=dict)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _certs: dict[str, Path] = field(default_factory=dict)
    _runs: int = 0

    # -- set-up ------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.logs = self.root / "logs"
        self.logs.mkdir(exist_ok=True)
        self.home = self.root / "flwr-home"
        self.home.mkdir(exist_ok=True)
        self.output_dir = self.root / "runs"
        self.output_dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.control_port = free_port()
        if self.tls:
            self._certs = write_certificates(self.root / "certs")
        security = (
            "insecure = true\n" if not self.tls else f'root-certificates = "{self._certs["ca"]}"\n'
        )
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "deploy"\n\n[superlink.deploy]\n'
            f'address = "127.0.0.1:{self.port}"\n{security}'
        )
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "FLWR_HOME": str(self.home),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLOWER_SUITE_OUTPUT_DIR": str(self.output_dir),
            "PYTHONUNBUFFERED": "1",
        }

    def _start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()  # the child holds its own descriptor
        self._procs.append(proc)
        return proc

    def _security_args(self, role: str) -> list[str]:
        if not self.tls:
            return ["--insecure"]
        if role == "superlink":
            return [
                "--ssl-ca-certfile",
                str(self._certs["ca"]),
                "--ssl-certfile",
                str(self._certs["cert"]),
                "--ssl-keyfile",
                str(self._certs["key"]),
            ]
        return ["--root-certificates", str(self._certs["ca"])]

    def start_superlink(self, timeout: float = 60.0) -> None:
        """Start the SuperLink (state in ``root/state.db``) and wait for its port."""
        self.superlink = self._start(
            "superlink",
            [
                str(BIN / "flower-superlink"),
                *self._security_args("superlink"),
                "--disable-runtime-dependency-installation",
                "--database",
                str(self.root / "state.db"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--control-api-address",
                f"127.0.0.1:{self.control_port}",
            ],
        )
        wait_for(lambda: self._alive(self.superlink) and port_open(self.port), timeout, "SuperLink")

    def _alive(self, proc: subprocess.Popen[bytes] | None) -> bool:
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"a federation process exited early\n{self.log_tails()}")
        return True

    def start_node(self, i: int, **extra: object) -> subprocess.Popen[bytes]:
        """Start SuperNode ``i`` with ``partition-id=i num-partitions=N`` and its extras."""
        config = {
            "partition-id": i,
            "num-partitions": self.nodes,
            **self.node_config_override.get(i, self.node_config(i)),
            **extra,
        }
        entries = " ".join(
            f'{k}="{v}"' if isinstance(v, str) else f"{k}={v}" for k, v in config.items()
        )
        proc = self._start(
            f"supernode-{i}",
            [
                str(BIN / "flower-supernode"),
                *self._security_args("supernode"),
                "--superlink",
                f"127.0.0.1:{self.port}",
                "--port",
                str(free_port()),
                "--max-wait-time",
                "120",
                "--node-config",
                entries,
            ],
        )
        self.supernodes[i] = proc
        return proc

    def start(self) -> Federation:
        self.start_superlink()
        for i in range(self.nodes):
            self.start_node(i)
        return self

    # -- faults ------------------------------------------------------------------------------
    def kill_node(self, i: int) -> None:
        """SIGKILL SuperNode ``i`` and its ClientApp processes (a crashed machine)."""
        proc = self.supernodes.pop(i)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def reconfigure_node(self, i: int, **extra: object) -> None:
        """Stop SuperNode ``i`` gracefully (SIGTERM: it leaves the federation) and start it
        again with ``extra`` as its node config (instead of ``node_config(i)``)."""
        proc = self.supernodes.pop(i, None)
        if proc is not None:  # None: killed earlier
            stop_process(proc)
        self.node_config_override[i] = dict(extra)
        self.start_node(i)

    def restart_superlink(self, timeout: float = 60.0) -> None:
        """Stop the SuperLink (SIGTERM, by PID) and start it again on the same port and state."""
        assert self.superlink is not None
        stop_process(self.superlink)
        wait_for(lambda: not port_open(self.port), timeout, "the SuperLink's port to close")
        self.start_superlink(timeout)

    # -- runs --------------------------------------------------------------------------------
    def submit(self, run_config: str) -> PendingRun:
        """Start ``flwr run`` of the package's app (this repository) on the federation,
        streaming its logs; :meth:`finish` waits for it."""
        self._runs += 1
        name = f"flwr-run-{self._runs}"
        before = set(self.output_dir.iterdir())
        args = [str(BIN / "flwr"), "run", str(REPO), "deploy", "--stream"]
        proc = self._start(name, [*args, "--run-config", run_config])
        return PendingRun(proc, self.logs / f"{name}.log", before, time.monotonic())

    def finish(self, run: PendingRun, timeout: float = 300.0) -> RunOutcome:
        """Wait for ``run`` to end; ``TimeoutError`` (with every log tail) after ``timeout``
        seconds from its start: a hang is a failure, never a wait."""
        left = max(1.0, timeout - (time.monotonic() - run.started))
        try:
            run.proc.wait(timeout=left)
        except subprocess.TimeoutExpired as err:
            stop_process(run.proc)
            raise TimeoutError(
                f"`flwr run` did not end within {timeout:g} s\n{self.log_tails()}"
            ) from err
        new = sorted(set(self.output_dir.iterdir()) - run.before)
        return RunOutcome(
            returncode=int(run.proc.returncode),
            output=run.log.read_text(errors="replace"),
            run_dir=new[-1] if new else None,
            wall_s=time.monotonic() - run.started,
        )

    def run(self, run_config: str, timeout: float = 300.0) -> RunOutcome:
        """:meth:`submit` then :meth:`finish`."""
        return self.finish(self.submit(run_config), timeout)

    def online_nodes(self) -> int:
        """How many SuperNodes the SuperLink lists as online (``flwr supernode ls``)."""
        proc = subprocess.run(
            [str(BIN / "flwr"), "supernode", "ls", "deploy", "--format", "json"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        try:
            listing = json.loads(proc.stdout)
        except json.JSONDecodeError:
            return -1
        nodes = listing.get("nodes", []) if isinstance(listing, dict) else []
        return sum(1 for n in nodes if str(n.get("status", "")).lower() == "online")

    def wait_online(self, count: int, timeout: float = 90.0) -> None:
        """Wait until exactly ``count`` SuperNodes are online."""
        wait_for(lambda: self.online_nodes() == count, timeout, f"{count} online SuperNodes")

    # -- tear-down ---------------------------------------------------------------------------
    def log_tails(self, chars: int = 2500) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}"
            for p in sorted(self.logs.iterdir())
        )

    def stop(self, grace: float = 5.0) -> None:
        """Stop every process this federation started, by PID: SIGTERM to all their groups,
        then SIGKILL to whatever is left after ``grace`` seconds."""
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in reversed(self._procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            stop_process(proc, grace=0.0)


@contextlib.contextmanager
def federation(
    root: Path,
    nodes: int,
    *,
    tls: bool = False,
    node_config: Callable[[int], Mapping[str, object]] = lambda _i: {},
) -> Iterator[Federation]:
    """A started :class:`Federation`, stopped on exit whatever happens."""
    fed = Federation(root, nodes, tls=tls, node_config=node_config)
    try:
        yield fed.start()
    finally:
        fed.stop()
