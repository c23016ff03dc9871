"""FedMA with communication vs FedAvg vs FedProx on digits, Dirichlet(0.5), DigitsCNN.

Spec ``shared/spec/fedma.md`` §12, check 9 (the direction of Tables 5.1/5.2): at an equal
number of communication rounds (FedAvg/FedProx rounds = N x FedMA rounds, N = 4 matchable
layers of DigitsCNN), compare final test accuracy, bytes of ArrayRecords sent both ways
(counted by the runner's ``MeteredGrid``), global model growth and wall time. All methods run
on Flower's Ray simulation with the same data, partitions and client hyper-parameters (E is
reported per method). A matching-time scaling table (``match_client_layers`` on synthetic
layers) follows.

    python benchmarks/fedma_digits.py                 # 8 and 16 clients, 10 Ray runs
    python benchmarks/fedma_digits.py --clients 8 --gamma0 7   # growth up to max_width_ratio

On 2 shared cores the default took 1,011 s with the machine heavily loaded by other jobs
(load average ~20); a single FedMA run takes ~40 s on a quiet machine.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from flower_suite.clients.fedma_client import add_fedma_handlers
from flower_suite.matching.layerwise import match_client_layers
from flower_suite.matching.permutation import LayerSpec
from flower_suite.simulations import run_experiment
from flower_suite.simulations.config import (
    ClientConfig,
    DataConfig,
    ExperimentConfig,
    NamedConfig,
    PartitionConfig,
)
from flower_suite.simulations.engine import backend_config, simulation_client_app
from flower_suite.simulations.engine.metering import MeteredGrid
from flower_suite.simulations.engine.task import ExperimentTask
from flower_suite.strategies import FedMA
from flower_suite.training import evaluate


@dataclass
class Outcome:
    """Per-evaluation accuracies, total bytes, growth and wall time of one method."""

    accuracy: list[float] = field(default_factory=list)
    bytes_total: int = 0
    growth: float = 1.0
    widths: list[int] = field(default_factory=list)
    wall_s: float = 0.0
    matching_s: float = 0.0


def base_config(num_clients: int, rounds: int, epochs: int, seed: int = 0) -> ExperimentConfig:
    """Digits, Dirichlet(0.5) over ``num_clients`` clients, DigitsCNN, all clients each round."""
    return ExperimentConfig(
        name=f"fedma-bench-{num_clients}",
        seed=seed,
        rounds=rounds,
        num_clients=num_clients,
        data=DataConfig(dataset="digits"),
        partition=PartitionConfig(scheme="dirichlet", alpha=0.5),
        model=NamedConfig("digits_cnn"),
        client=ClientConfig(local_epochs=epochs, lr=0.05, momentum=0.9, batch_size=16),
    )


def run_baseline(config: ExperimentConfig) -> Outcome:
    """FedAvg / FedProx through the suite's runner (test-set accuracy and bytes per round)."""
    start = time.perf_counter()
    result = run_experiment(config, record=False)
    rows = result.rows
    return Outcome(
        accuracy=[float(r["test-acc"]) for r in rows],
        bytes_total=int(sum(r.get("bytes-sent", 0) + r.get("bytes-received", 0) for r in rows)),
        wall_s=time.perf_counter() - start,
    )


def run_fedma(config: ExperimentConfig, num_rounds: int, **fedma_kwargs: Any) -> Outcome:
    """FedMA with communication on the same data, partitions and client settings."""
    from flwr.simulation import run_simulation

    task = ExperimentTask(config).preloaded()
    test = task.data()[1]
    outcome = Outcome()
    errors: list[BaseException] = []
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        try:
            metered = MeteredGrid(grid)
            strategy = FedMA(
                model_fn=task.build_model, fraction_evaluate=0.0, seed=config.seed, **fedma_kwargs
            )

            def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
                model = strategy.model_for_arrays(arrays)
                acc = evaluate(model, test, device=torch.device("cpu")).accuracy
                outcome.accuracy.append(acc)
                return MetricRecord({"test-acc": acc})

            strategy.start(
                grid=metered,
                initial_arrays=ArrayRecord(task.build_model(seed=config.seed).state_dict()),
                num_rounds=num_rounds,
                evaluate_fn=evaluate_fn,
            )
            outcome.bytes_total = metered.bytes_sent + metered.bytes_received
            outcome.growth = strategy.growth_history[num_rounds]
            outcome.widths = strategy.width_history[num_rounds]
            outcome.matching_s = sum(sum(t) for t in strategy.matching_time.values())
        except BaseException as err:
            errors.append(err)
            raise

    app = simulation_client_app(task)
    add_fedma_handlers(
        app,
        lambda ctx: task.build_model(),
        lambda ctx: task.client_data(int(ctx.node_config["partition-id"])),
        defaults=task.train_config,
        seed=config.seed,
        device="cpu",
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_simulation(
            server_app=server_app,
            client_app=app,
            num_supernodes=config.num_clients,
            backend_name="ray",
            backend_config=backend_config(config),  # type: ignore[arg-type]
        )
    if errors:
        raise RuntimeError("FedMA run failed") from errors[0]
    outcome.wall_s = time.perf_counter() - start
    return outcome


def comparison(num_clients: int, fedma_rounds: int, args: argparse.Namespace) -> None:
    """Print one Markdown table: FedMA vs FedAvg vs FedProx at equal communication rounds."""
    steps = 4  # matchable layers of DigitsCNN: conv1, conv2, fc1, fc2
    comm_rounds = steps * fedma_rounds
    fedma_cfg = base_config(num_clients, fedma_rounds, args.fedma_epochs)
    results: dict[str, Outcome] = {
        f"FedMA (E={args.fedma_epochs}, gamma0={args.gamma0})": run_fedma(
            fedma_cfg,
            fedma_rounds,
            gamma0=args.gamma0,
            sigma_sq=args.sigma_sq,
            max_width_ratio=args.max_width_ratio,
            shared_init=args.shared_init,
        )
    }
    for epochs in sorted({args.fedavg_epochs, args.fedma_epochs}):
        avg = base_config(num_clients, comm_rounds, epochs)
        results[f"FedAvg (E={epochs})"] = run_baseline(avg)
        prox = replace(
            avg,
            strategy=NamedConfig("fedprox", {"proximal_mu": 0.001}),
            client=replace(avg.client, proximal_mu=0.001),
        )
        results[f"FedProx (E={epochs}, mu=0.001)"] = run_baseline(prox)
    print(
        f"\n### {num_clients} clients: {fedma_rounds} FedMA rounds = {comm_rounds} "
        f"communication rounds\n"
    )
    print(
        "| method | final acc | acc per FedMA round | MB sent+received | growth | widths | wall s |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, out in results.items():
        # Baselines evaluate every communication round: keep every `steps`-th (round 0 first).
        per_round = out.accuracy if name.startswith("FedMA") else out.accuracy[::steps]
        accs = " ".join(f"{a:.3f}" for a in per_round)
        widths = "/".join(map(str, out.widths)) if out.widths else "16/32/64"
        print(
            f"| {name} | {out.accuracy[-1]:.3f} | {accs} | {out.bytes_total / 1e6:.2f} | "
            f"{out.growth:.2f}x | {widths} | {out.wall_s:.0f} |",
            flush=True,
        )


def scaling_table() -> None:
    """Per-layer matching time vs clients J and layer width L (synthetic unit vectors)."""
    print("\n### Matching time per layer (s), D = 145 (a 16-channel 3x3 conv), 5 sweeps\n")
    widths = (16, 32, 64, 128)
    print("| J \\ L | " + " | ".join(map(str, widths)) + " |")
    print("|---|" + "---|" * len(widths))
    spec = LayerSpec.linear("fc")
    rng = np.random.default_rng(0)
    for clients in (4, 8, 16):
        cells = []
        for width in widths:
            base = rng.normal(scale=0.3, size=(width, 144))
            layers = []
            for _ in range(clients):
                noisy = base[rng.permutation(width)] + rng.normal(scale=0.05, size=base.shape)
                layers.append({"fc.weight": noisy, "fc.bias": rng.normal(scale=0.1, size=width)})
            result = match_client_layers(layers, spec, gamma0=1e-3)
            cells.append(f"{result.seconds:.3f}")
        print(f"| {clients} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--fedma-rounds", type=int, default=3)
    parser.add_argument("--fedma-epochs", type=int, default=5)
    parser.add_argument("--fedavg-epochs", type=int, default=2)
    parser.add_argument("--gamma0", type=float, default=1.0)
    parser.add_argument("--sigma-sq", type=float, default=1.0)
    parser.add_argument("--max-width-ratio", type=float, default=1.25)
    parser.add_argument("--shared-init", action="store_true")
    parser.add_argument("--no-scaling", action="store_true")
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    start = time.perf_counter()
    for num_clients in args.clients:
        comparison(num_clients, args.fedma_rounds, args)
    if not args.no_scaling:
        scaling_table()
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
