"""Wall time of `flower_suite` runner vs a plain Flower `run_simulation` of the same experiment.

Both run FedAvg on the digits demo (10 clients, all per round, 15 rounds, DigitsCNN, 2 local
epochs, lr 0.1, batch 16, server-side test evaluation every round) on the Ray backend with
1 CPU per client. The plain version is what a Flower user would write by hand: its own
ClientApp/ServerApp and training loop, no config layer, no hooks, no run directory. Runs
alternate between the two, and we report the median of `--repeats` runs and the ratio.

    python benchmarks/runner_overhead.py [--repeats 3] [--rounds 15]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation
from torch.nn import functional as F

from flower_suite.data import PartitionSpec, load_digits_split, partition_indices
from flower_suite.models import DigitsCNN
from flower_suite.simulations import load_config, run_experiment

NUM_CLIENTS, LR, EPOCHS, BATCH, MOMENTUM, SEED = 10, 0.1, 2, 16, 0.9, 0


def plain_flower(rounds: int) -> float:
    """The experiment written directly against Flower; returns the final test accuracy."""
    train, test = load_digits_split()
    parts = partition_indices(train, NUM_CLIENTS, PartitionSpec("iid", seed=SEED))
    client_app = ClientApp()

    @client_app.train()
    def _train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        model = DigitsCNN()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        idx = parts[int(context.node_config["partition-id"])]
        x, y = torch.as_tensor(train.x[idx]), torch.as_tensor(train.y[idx])
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        gen = torch.Generator().manual_seed(int(msg.content["config"]["server-round"]))
        model.train()
        for _ in range(EPOCHS):
            order = torch.randperm(len(y), generator=gen)
            for s in range(0, len(y), BATCH):
                b = order[s : s + BATCH]
                opt.zero_grad()
                loss = F.cross_entropy(model(x[b]), y[b])
                loss.backward()
                opt.step()
        metrics = MetricRecord({"train-loss": float(loss.detach()), "num-examples": len(y)})
        content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
        return Message(content=content, reply_to=msg)

    final: dict[str, float] = {}
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        eval_model = DigitsCNN()
        xt, yt = torch.as_tensor(test.x), torch.as_tensor(test.y)

        def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            eval_model.load_state_dict(arrays.to_torch_state_dict())
            eval_model.eval()
            with torch.no_grad():
                logits = eval_model(xt)
            acc = float((logits.argmax(1) == yt).float().mean())
            final["acc"] = acc
            return MetricRecord({"test-acc": acc, "test-loss": float(F.cross_entropy(logits, yt))})

        torch.manual_seed(SEED)
        strategy = FedAvg(fraction_evaluate=0.0, min_available_nodes=NUM_CLIENTS)
        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(DigitsCNN().state_dict()),
            num_rounds=rounds,
            train_config=ConfigRecord({}),
            evaluate_fn=evaluate_fn,
        )

    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=NUM_CLIENTS,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    return final["acc"]


def ours(rounds: int, record: bool) -> float:
    config = load_config("digits_fedavg", [f"rounds={rounds}", "output_dir='/tmp/fs-bench-runs'"])
    return run_experiment(config, record=record).final["test-acc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)

    candidates = {
        "plain flwr run_simulation": lambda: plain_flower(args.rounds),
        "flower-suite run_experiment (run dir written)": lambda: ours(args.rounds, True),
        "flower-suite run_experiment (no run dir)": lambda: ours(args.rounds, False),
    }
    times: dict[str, list[float]] = {name: [] for name in candidates}
    accs: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(args.repeats):
        for name, fn in candidates.items():  # interleaved, so drift hits all alike
            start = time.perf_counter()
            accs[name].append(fn())
            times[name].append(time.perf_counter() - start)

    base = statistics.median(times["plain flwr run_simulation"])
    print(f"\n{args.rounds} rounds, {NUM_CLIENTS} clients, median of {args.repeats}\n")
    print("| runner | wall time s (median) | runs | ratio vs plain | final test acc |")
    print("|---|---|---|---|---|")
    for name in candidates:
        med = statistics.median(times[name])
        runs = ", ".join(f"{t:.1f}" for t in times[name])
        print(f"| {name} | {med:.2f} | {runs} | {med / base:.3f} | {np.mean(accs[name]):.3f} |")


if __name__ == "__main__":
    main()
