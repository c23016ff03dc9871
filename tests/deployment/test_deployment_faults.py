"""The package's Flower app on a real federation (``flower-superlink`` + ``flower-supernode``
processes on loopback, see ``federation.py``), with faults injected by
:mod:`flower_suite.clients.fault_mod` and by the test itself.

Two federations, shared by the cases (each case is one ``flwr run``):

- insecure, 5 nodes: node 1 sends an error reply in round 1; in round 2 node 2 sends NaN,
  node 3 a mis-shaped array and node 4 is killed (SIGKILL, with its ClientApp) while training.
  FedMedian must exclude each and log why; then the SuperLink is restarted and FedMA runs on
  the same nodes (node 1's error reply in round 1 makes FedMA abandon that pass, logged, the
  global model kept; round 2 learns).
- TLS (CA and server certificate made at test time), 4 nodes: secure aggregation with node 3
  slower than the ``[secagg]`` stage timeout (dropped); the same straggler without
  ``[secagg]`` (no round timeout: the app's watchdog stops the run); then PUFFERFISH's
  switch (full rank in round 1, factorized in round 2) with node 3 sending an error reply in
  round 2.

Every run must end (a hang is a failure after its timeout), with exit code 0, the faulty
replies excluded and logged, and a finite global model above chance accuracy (digits: 0.1).
About 4-6 minutes on an idle 2-core machine (every message starts a ``flwr-clientapp``
process that imports torch); each ``flwr run`` is bounded by ``RUN_TIMEOUT``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from federation import Federation, RunOutcome, federation, wait_for

pytestmark = pytest.mark.simulation

RUN_TIMEOUT = 420.0  # seconds per `flwr run`; a killed node costs up to 2 x 30 s heartbeats
CHANCE = 0.1
BASE = 'num_clients={n} model.name="mlp" client.local_epochs=1 client.lr=0.1'


def run_config(nodes: int, overrides: str) -> str:
    return f"experiment='digits_fedavg' overrides='{BASE.format(n=nodes)} {overrides}'"


def rows_of(outcome: RunOutcome) -> list[dict]:
    assert outcome.returncode == 0, outcome.output[-4000:]
    assert outcome.run_dir is not None, outcome.output[-4000:]
    text = (outcome.run_dir / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def assert_sound(outcome: RunOutcome, rounds: int) -> list[dict]:
    """The run finished every round; the saved global model is finite and beats chance."""
    rows = rows_of(outcome)
    assert [r["round"] for r in rows] == list(range(rounds + 1))
    assert math.isfinite(rows[-1]["test-loss"])
    assert rows[-1]["test-acc"] > 3 * CHANCE, rows[-1]
    assert outcome.run_dir is not None
    state = torch.load(outcome.run_dir / "model.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())
    return rows


# -- the insecure federation: FedMedian with four faults, then FedMA after a restart ---------


def _insecure_faults(marker: Path) -> dict[int, dict[str, object]]:
    return {
        1: {"fault": "error", "fault-round": 1},
        2: {"fault": "nan", "fault-round": 2},
        3: {"fault": "shape", "fault-round": 2},
        4: {"fault": "slow", "fault-round": 2, "fault-delay": 600, "fault-marker": str(marker)},
    }


@pytest.fixture(scope="module")
def insecure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("insecure")
    faults = _insecure_faults(root / "node4-training")
    with federation(root, 5, node_config=lambda i: faults.get(i, {})) as fed:
        yield fed


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    faults = {3: {"fault": "slow", "fault-round": 1, "fault-delay": 600}}
    root = tmp_path_factory.mktemp("tls")
    with federation(root, 4, tls=True, node_config=lambda i: faults.get(i, {})) as fed:
        yield fed


def test_robust_median_excludes_error_nan_misshaped_and_a_killed_node(
    insecure: Federation,
) -> None:
    # Execute: submit, kill node 4 (SuperNode and ClientApp) once it trains in round 2
    pending = insecure.submit(run_config(5, 'rounds=2 strategy.name="fedmedian"'))
    marker = insecure.root / "node4-training"
    try:
        wait_for(marker.exists, RUN_TIMEOUT, "node 4 to train in round 2")
    except TimeoutError as err:
        raise AssertionError(f"{err}\n{insecure.log_tails()}") from err
    insecure.kill_node(4)
    outcome = insecure.finish(pending, RUN_TIMEOUT)

    # Assert: every fault excluded with its reason in the log, model sound. An error reply
    # carries no partition id (recorded as -1); the SuperLink answers for the killed node.
    rows = assert_sound(outcome, rounds=2)
    log = outcome.output
    assert "injected error" in log and "Node Unavailable" in log
    assert "update contains NaN" in log and "shape (4095,), expected (64, 64)" in log
    assert log.count("excluded reply from node") == 4, log[-4000:]
    assert len(rows[1]["rejected-nodes"]) == 1 and rows[1]["train-clients"] == 4, rows[1]
    assert len(rows[2]["rejected-nodes"]) == 3 and rows[2]["train-clients"] == 2, rows[2]
    assert {2, 3} <= set(rows[2]["rejected-partitions"]), rows[2]


def test_fedma_after_a_superlink_restart(insecure: Federation) -> None:
    # Prepare: node 4 back (no fault), the SuperLink restarted on its state database
    insecure.reconfigure_node(4)
    insecure.restart_superlink()
    insecure.wait_online(5)

    # Execute: two FedMA rounds; node 1 answers round 1's first layer step with an error
    outcome = insecure.run(run_config(5, 'rounds=2 strategy.name="fedma"'), RUN_TIMEOUT)

    # Assert: FedMA needs every sampled node's reply in a layer step (min_train_nodes is
    # the sample size), so round 1's pass is abandoned, logged, and the global model kept;
    # round 2 matches all five and learns
    rows = assert_sound(outcome, rounds=2)
    log = outcome.output
    assert "FedMA: node" in log and "injected error" in log
    assert "round 1 step 0: 4 replies, fewer than min_train_nodes=5" in log
    assert "the pass is abandoned and the global model kept" in log
    assert rows[1]["test-acc"] == rows[0]["test-acc"], rows
    assert rows[1]["test-loss"] == rows[0]["test-loss"], rows


# -- the TLS federation: secure aggregation with a straggler, then PUFFERFISH's switch --------


def test_secagg_over_tls_drops_a_node_slower_than_the_stage_timeout(tls: Federation) -> None:
    # The stage timeout must cover a ClientApp's start (a process importing torch; ~5 s on an
    # idle machine, 20-30 s on a loaded one), so it is generous: the straggler costs it once.
    secagg = (
        "rounds=1 secagg.num_shares=4 secagg.reconstruction_threshold=3 "
        "secagg.clipping_range=8.0 secagg.timeout=60.0"
    )
    outcome = tls.run(run_config(4, secagg), RUN_TIMEOUT)
    rows = assert_sound(outcome, rounds=1)
    assert rows[1]["rule-secagg-survivors"] == 3, rows[1]
    assert rows[1]["rule-secagg-dropped"] == 1, rows[1]


def test_a_straggler_without_secagg_stops_the_run_at_the_watchdog(tls: Federation) -> None:
    """Without ``[secagg]`` there is no per-round timeout (Flower's default: an hour); the
    app's watchdog ends the run when no reply came for ``watchdog_s`` (node 3 still sleeps).
    60 s: the watchdog also counts a ClientApp's start (20 s saw no reply at all under load)."""
    outcome = tls.run(run_config(4, "rounds=1 watchdog_s=60"), RUN_TIMEOUT)
    assert "no reply from 1 node(s) for 60 s (watchdog_s)" in outcome.output, outcome.output
    assert outcome.run_dir is not None and not (outcome.run_dir / "model.pt").exists()


def test_pufferfish_switch_over_tls_excludes_an_error_reply(tls: Federation) -> None:
    # Prepare: node 3 (the straggler of the previous case) now fails in round 2
    tls.reconfigure_node(3, fault="error", **{"fault-round": 2})
    tls.wait_online(4)

    # Execute: full rank in round 1, factorized in round 2
    lowrank = (
        "rounds=2 lowrank.rank_ratio=0.25 lowrank.warmup_rounds=1 lowrank.keep_first_and_last=false"
    )
    outcome = tls.run(run_config(4, lowrank), RUN_TIMEOUT)

    # Assert: the factorized model is smaller on the wire; node 3's reply excluded in round 2
    rows = assert_sound(outcome, rounds=2)
    assert rows[2]["global-bytes"] < rows[1]["global-bytes"], rows
    assert rows[1].get("train-clients") == 4 and rows[2].get("train-clients") == 3, rows
    assert "injected error" in outcome.output


def test_a_bad_experiment_stops_the_run_with_its_reason(tls: Federation) -> None:
    """A ServerApp that fails before round 1 (an unknown strategy) ends ``flwr run`` with the
    config error in its output, without waiting for any node."""
    outcome = tls.run(run_config(4, 'rounds=1 strategy.name="no_such_rule"'), 120.0)
    assert outcome.run_dir is None
    assert "strategy.name" in outcome.output and "no_such_rule" in outcome.output, outcome.output
