"""BatchNorm models train end to end through Ray under every robust rule, a defense and SecAgg.

Measured before the fix: from round 2 every reply was rejected (the 0-d ``num_batches_tracked``
came back from the strategy as shape (1,)): accuracy froze after round 1 with exit code 0, or
the runner crashed loading the global model. Real Flower simulations on the Ray backend.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from flower_suite.simulations import load_config, run_experiment
from flower_suite.simulations.engine import backend_config, prepare, simulation_client_app
from flower_suite.simulations.engine.server import RunResult, server_main

pytestmark = pytest.mark.simulation

BASE = [
    "num_clients=5",
    "rounds=3",
    "model.name=digits_cnn",
    "model.batch_norm=true",
    "client.local_epochs=1",
    "name=bn",
]
CASES = {
    "krum": ["strategy.name=krum", "strategy.num_malicious_nodes=1"],
    "multikrum": ["strategy.name=multikrum", "strategy.num_malicious_nodes=1"],
    "bulyan": ["strategy.name=bulyan"],
    "fedmedian": ["strategy.name=fedmedian"],
    "fedtrimmedavg": ["strategy.name=fedtrimmedavg", "strategy.beta=0.2"],
    "geometric_median": ["strategy.name=geometric_median"],
    "signsgd": ["strategy.name=signsgd", "strategy.server_learning_rate=0.01"],
    "centeredclipping": ["strategy.name=centeredclipping", "strategy.tau=10.0"],
    "normclipping": ["strategy.name=normclipping", "strategy.max_norm=10.0"],
}


def _check_trains(result: RunResult) -> None:
    arrays, rows = result.final_arrays, result.rows
    assert arrays is not None
    counter = [k for k in arrays if k.endswith("num_batches_tracked")]
    assert counter and all(arrays[k].shape == () for k in counter)
    assert all(np.isfinite(arrays[k].numpy()).all() for k in arrays)
    for row in rows[1:]:
        assert row.get("rejected-nodes", []) == [], row
        assert "skipped" not in row, row
    losses = [row["test-loss"] for row in rows]
    # The model keeps moving after round 1 (before the fix it froze: equal losses).
    assert losses[3] != losses[2] != losses[1]
    assert max(row["test-acc"] for row in rows[1:]) > rows[0]["test-acc"]


def test_every_robust_rule_and_a_defense_train_a_batchnorm_model_through_ray() -> None:
    """One Ray simulation (one start-up) whose ServerApp runs each configured strategy in
    turn, three rounds each, on the same nodes: the runner's own ``server_main``, hooks and
    ClientApp."""
    configs = {case: load_config("digits_fedavg", [*BASE, *CASES[case]]) for case in CASES}
    task = prepare(configs["fedmedian"])  # same data, partitions and model for every case
    results: dict[str, RunResult] = {}
    app = ServerApp()

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        for case, config in configs.items():
            results[case] = server_main(grid, config, task=task)

    run_simulation(
        server_app=app,
        client_app=simulation_client_app(task),
        num_supernodes=5,
        backend_name="ray",
        backend_config=backend_config(configs["fedmedian"]),  # type: ignore[arg-type]
    )
    assert sorted(results) == sorted(CASES)
    for case, result in results.items():
        try:
            _check_trains(result)
        except AssertionError as err:
            raise AssertionError(f"{case}: {err}") from err


def test_secure_aggregation_trains_a_batchnorm_model_through_ray() -> None:
    config = load_config(
        "digits_fedavg",
        [*BASE, "strategy.name=fedavg", "secagg.num_shares=5", "secagg.clipping_range=8.0"],
    )
    _check_trains(run_experiment(config, record=False))


def test_resnet18_trains_two_rounds_under_median_on_cifar_shaped_data() -> None:
    """ResNet-18 (BatchNorm throughout) on synthetic CIFAR-shaped images, two Ray rounds."""
    config = load_config(
        "digits_fedavg",
        [
            "num_clients=40",  # 50 images per client: two SGD steps each
            "clients_per_round=2",
            "rounds=2",
            "name=resnet-bn",
            "data.dataset=synthetic_cifar",
            "data.test_fraction=0.02",
            "model.name=resnet18",
            "strategy.name=fedmedian",
            "client.local_epochs=1",
            "client.batch_size=32",
            "client.lr=0.01",
        ],
    )
    result = run_experiment(config, record=False)
    assert result.final_arrays is not None
    assert all(row.get("rejected-nodes", []) == [] for row in result.rows[1:])
    assert result.rows[2]["test-loss"] != result.rows[1]["test-loss"]
    assert np.isfinite([row["test-loss"] for row in result.rows]).all()
