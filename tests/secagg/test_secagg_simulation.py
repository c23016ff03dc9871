"""End to end on Flower's Ray simulation engine: FedAvg with and without secure aggregation.

Digits, 6 clients, 3 rounds, every client every round. The secure run must reach the plain
run's accuracy within 1 point (quantization with T = 2**22 levels is far finer than SGD noise).
The runner resolves strategies by name, so the test registers a factory for the wrapper.
"""

from __future__ import annotations

from typing import Any

import pytest
from flwr.serverapp.strategy import FedAvg

from flower_suite.clients.secagg_mod import secagg_mod
from flower_suite.simulations import load_config, run_experiment
from flower_suite.strategies import STRATEGIES, register_strategy
from flower_suite.strategies.secagg import SecAggPlus

pytestmark = pytest.mark.simulation

NAME = "secagg_fedavg_test"
LAST: dict[str, SecAggPlus] = {}


def secagg_fedavg(
    fraction_train: float = 1.0,
    fraction_evaluate: float = 1.0,
    min_train_nodes: int = 2,
    min_evaluate_nodes: int = 2,
    min_available_nodes: int = 2,
    train_metrics_aggr_fn: Any = None,
    evaluate_metrics_aggr_fn: Any = None,
    num_shares: int | float = 1.0,
    reconstruction_threshold: int | None = None,
    clipping_range: float = 8.0,
) -> SecAggPlus:
    inner = FedAvg(
        fraction_train=fraction_train,
        fraction_evaluate=fraction_evaluate,
        min_train_nodes=min_train_nodes,
        min_evaluate_nodes=min_evaluate_nodes,
        min_available_nodes=min_available_nodes,
        train_metrics_aggr_fn=train_metrics_aggr_fn,
        evaluate_metrics_aggr_fn=evaluate_metrics_aggr_fn,
    )
    strategy = SecAggPlus(
        inner,
        num_shares=num_shares,
        reconstruction_threshold=reconstruction_threshold,
        clipping_range=clipping_range,
        # Round-to-nearest keeps the run deterministic: stochastic rounding draws fresh OS
        # randomness and moves round-3 accuracy by up to 3 points between runs.
        stochastic_rounding=False,
    )
    LAST["strategy"] = strategy
    return strategy


if NAME not in STRATEGIES:
    register_strategy(NAME, secagg_fedavg)


def test_secure_fedavg_matches_plain_fedavg_accuracy() -> None:
    common = ["num_clients=6", "rounds=3", "evaluate_clients=0"]
    plain = run_experiment(load_config("digits_fedavg", [*common, "name=plain"]), record=False)
    config = load_config(
        "digits_fedavg",
        [*common, "name=secure", f"strategy.name={NAME}", "strategy.num_shares=5"],
    )
    secure = run_experiment(config, client_mods=[secagg_mod], record=False)
    plain_acc, secure_acc = plain.final["test-acc"], secure.final["test-acc"]
    assert plain_acc > 0.85
    assert abs(secure_acc - plain_acc) <= 0.01, (plain.rows, secure.rows)
    # SecAgg+ ran with k = 5 of 6 every round, nobody dropped, nothing was clipped
    strategy = LAST["strategy"]
    assert sorted(strategy.records) == [1, 2, 3]
    for record in strategy.records.values():
        assert not record.aborted and len(record.survivors) == 6
        assert max(record.clipped_fraction.values()) == 0.0
