"""A run attached to a real two-node Ray cluster on loopback (issue 13).

The cluster (``ray start --head`` plus ``ray start --address``, each node 1 CPU) lives in a
private network namespace; ``flower-suite run`` runs there with ``RAY_ADDRESS`` pointing at it.
Before issue 13 this failed ("When connecting to an existing cluster, num_cpus and num_gpus
must not be provided") and the CLI then hung.
"""

from __future__ import annotations

import csv
import dataclasses
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ray_cluster import LoopbackCluster, can_create_namespaces, loopback_cluster

from flower_suite.simulations import load_config, run_experiment

pytestmark = [
    pytest.mark.simulation,
    pytest.mark.skipif(not can_create_namespaces(), reason="network namespaces need root"),
]

CLI = [sys.executable, "-m", "flower_suite.simulations.cli"]
OVERRIDES = ["rounds=2", "num_clients=6", "clients_per_round=4", "resources.num_cpus=1"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LoopbackCluster]:
    with loopback_cluster(nodes=2, cpus_per_node=1) as running:
        yield running


def _run_in_cluster(
    cluster: LoopbackCluster, args: list[str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cluster.command([*CLI, *args]),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cluster.env(RAY_ADDRESS=cluster.address),
    )


def test_run_uses_both_nodes_and_matches_the_single_node_run(
    cluster: LoopbackCluster, tmp_path: Path
) -> None:
    sets = [arg for override in OVERRIDES for arg in ("--set", override)]
    done = _run_in_cluster(cluster, ["run", "digits_fedavg", *sets, "--output-dir", str(tmp_path)])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = tmp_path.iterdir()
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    placement = list(csv.DictReader((run_dir / "placement.csv").open()))
    # Both nodes hosted clients (one 1-CPU actor each).
    assert len({row["ray-node"] for row in placement}) == 2, placement
    # The same experiment on one machine (the in-process engine, equal to a local Ray run)
    config = load_config("digits_fedavg", OVERRIDES)
    local = run_experiment(dataclasses.replace(config, engine="inprocess"), record=False).rows
    assert [float(r["test-acc"]) for r in rows] == [r["test-acc"] for r in local]
    assert [float(r["test-loss"]) for r in rows] == pytest.approx(
        [r["test-loss"] for r in local], rel=1e-6
    )


def test_client_too_big_for_every_node_exits_2_naming_the_field(cluster: LoopbackCluster) -> None:
    start = time.monotonic()
    done = _run_in_cluster(
        cluster, ["run", "digits_fedavg", "--no-record", "--set", "resources.num_cpus=2"], 120
    )
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert "config error: resources.num_cpus: no Ray node can host a client" in done.stdout
    assert "1 CPU/0 GPU, 1 CPU/0 GPU" in done.stdout
    assert time.monotonic() - start < 90  # imports + attach + check; 30 s when not loaded
