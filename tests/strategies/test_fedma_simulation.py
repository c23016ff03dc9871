"""FedMA end to end on Flower's Ray simulation: digits, Dirichlet(0.5), DigitsCNN (§12.8)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from flower_suite.clients import ClientData, make_client_app
from flower_suite.clients.client_app import partition_id_of
from flower_suite.clients.fedma_client import add_fedma_handlers
from flower_suite.data import PartitionSpec, load_digits_split, partition_indices
from flower_suite.models import DigitsCNN
from flower_suite.simulations.engine.metering import MeteredGrid
from flower_suite.strategies import FedMA
from flower_suite.training import TrainConfig, evaluate

pytestmark = pytest.mark.simulation

NUM_CLIENTS = 6


def test_fedma_simulation_learns_within_width_bounds() -> None:
    """Two FedMA rounds through run_simulation: accuracy far above chance (10%), widths
    bounded, every byte of the metered grid accounted for by the strategy's own meter."""
    from flwr.simulation import run_simulation

    # Prepare
    train, test = load_digits_split()
    parts = partition_indices(train, NUM_CLIENTS, PartitionSpec("dirichlet", alpha=0.5, seed=0))

    def data_fn(context: Context) -> ClientData:
        return ClientData(train=train.subset(parts[partition_id_of(context)]), test=test)

    config = TrainConfig(local_epochs=3, lr=0.05, batch_size=16)
    client_app = make_client_app(lambda ctx: DigitsCNN(), data_fn, defaults=config, device="cpu")
    add_fedma_handlers(client_app, lambda ctx: DigitsCNN(), data_fn, defaults=config, device="cpu")
    seen: dict[str, object] = {}
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        metered = MeteredGrid(grid)
        strategy = FedMA(
            model_fn=DigitsCNN,
            fraction_evaluate=0.5,
            min_available_nodes=NUM_CLIENTS,
            gamma0=7.0,
            max_width_ratio=1.25,
        )
        accuracy: dict[int, float] = {}
        model_bytes: dict[int, int] = {}

        def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            model_bytes[server_round] = arrays.count_bytes()
            model = strategy.model_for_arrays(arrays)
            accuracy[server_round] = evaluate(model, test, device=torch.device("cpu")).accuracy
            return MetricRecord({"acc": accuracy[server_round]})

        torch.manual_seed(0)
        result = strategy.start(
            metered, ArrayRecord(DigitsCNN().state_dict()), num_rounds=2, evaluate_fn=evaluate_fn
        )
        seen.update(
            strategy=strategy,
            result=result,
            accuracy=accuracy,
            metered=metered,
            model_bytes=model_bytes,
        )

    # Execute
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=NUM_CLIENTS,
            backend_name="ray",
            backend_config={
                "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                "init_args": {"num_cpus": os.cpu_count() or 1, "log_to_driver": False},
            },
        )

    # Assert
    assert "strategy" in seen, "the ServerApp did not finish"
    strategy, result, accuracy = seen["strategy"], seen["result"], seen["accuracy"]
    metered = seen["metered"]
    print(f"FedMA simulation accuracy per round: {accuracy}, widths {strategy.width_history}")
    assert sorted(accuracy) == [0, 1, 2]
    assert accuracy[2] > 0.7, accuracy  # chance is 0.1
    for widths in strategy.width_history.values():
        for width, own in zip(widths, (16, 32, 64), strict=True):
            assert own <= width <= int(np.ceil(1.25 * own))
    assert max(strategy.growth_history.values()) <= 1.6
    assert 0.0 <= result.evaluate_metrics_clientapp[2]["eval-acc"] <= 1.0
    training = sum(b["sent"] + b["received"] for b in strategy.bytes_history.values())
    # Federated evaluation sends the global model to half the clients after each round.
    evaluation = sum((NUM_CLIENTS // 2) * seen["model_bytes"][r] for r in (1, 2))
    assert metered.bytes_sent + metered.bytes_received == training + evaluation
