"""Start-up, time per round and peak memory vs the number of clients: flower-suite's runner
against a plain Flower ``run_simulation`` of the same experiment, both on the Ray backend.

FedAvg, MLP 64-64-10 on digits, 1 local epoch, batch 32, no federated evaluation, server-side
test accuracy each round. N clients share min(N, 100) IID partitions (client i trains on
partition i mod 100: digits has 1,437 training images). Each case runs in a fresh process
whose whole process tree (driver + Ray) is sampled for resident memory every 0.5 s.

    python benchmarks/scale.py [--clients 10 100 1000 10000] [--participation 0.05 0.1 1.0]
                               [--rounds 2] [--timeout 1200] [--json out.json]

Start-up is process start to the end of round 0 (the initial evaluation): imports, data,
Ray, and (before issue 13) the partition query sent to every node.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import subprocess
import sys
import time
from typing import Any

PROCESS_START = time.perf_counter()
PARTITIONS = 100


def _k(n: int, p: float) -> int:
    return max(1, round(n * p))


def run_ours(n: int, p: float, rounds: int) -> dict[str, Any]:
    from flower_suite.simulations import load_config, run_experiment

    config = load_config(
        "digits_fedavg",
        [
            f"num_clients={n}",
            f"clients_per_round={_k(n, p) if _k(n, p) < n else 0}",
            f"partition.num_partitions={min(n, PARTITIONS)}",
            f"rounds={rounds}",
            "model.name=mlp",
            "client.local_epochs=1",
            "client.batch_size=32",
            "client.lr=0.05",
        ],
    )
    stamps: list[float] = []
    result = run_experiment(
        config, record=False, on_round=lambda row: stamps.append(time.perf_counter())
    )
    return _summary(stamps, result.final["test-acc"])


def run_plain(n: int, p: float, rounds: int) -> dict[str, Any]:
    import torch
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation
    from torch.nn import functional as F

    from flower_suite.data import PartitionSpec, load_digits_split, partition_indices
    from flower_suite.models import MLP

    train, test = load_digits_split()
    parts = partition_indices(train, min(n, PARTITIONS), PartitionSpec("iid", seed=0))
    client_app = ClientApp()

    @client_app.train()
    def _train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        model = MLP()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        idx = parts[int(context.node_config["partition-id"]) % len(parts)]
        x, y = torch.as_tensor(train.x[idx]), torch.as_tensor(train.y[idx])
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        model.train()
        for s in range(0, len(y), 32):
            opt.zero_grad()
            loss = F.cross_entropy(model(x[s : s + 32]), y[s : s + 32])
            loss.backward()
            opt.step()
        metrics = MetricRecord({"train-loss": float(loss.detach()), "num-examples": len(y)})
        content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
        return Message(content=content, reply_to=msg)

    stamps: list[float] = []
    final: dict[str, float] = {}
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        xt, yt = torch.as_tensor(test.x), torch.as_tensor(test.y)
        eval_model = MLP()

        def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            eval_model.load_state_dict(arrays.to_torch_state_dict())
            with torch.no_grad():
                final["acc"] = float((eval_model(xt).argmax(1) == yt).float().mean())
            stamps.append(time.perf_counter())
            return MetricRecord({"test-acc": final["acc"]})

        torch.manual_seed(0)
        strategy = FedAvg(
            fraction_train=p, fraction_evaluate=0.0, min_available_nodes=n, min_train_nodes=1
        )
        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(MLP().state_dict()),
            num_rounds=rounds,
            train_config=ConfigRecord({}),
            evaluate_fn=evaluate_fn,
        )

    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=n,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    return _summary(stamps, final["acc"])


def _summary(stamps: list[float], acc: float) -> dict[str, Any]:
    rounds = [b - a for a, b in itertools.pairwise(stamps)]
    return {
        "startup_s": stamps[0] - PROCESS_START,
        "round_s": sum(rounds) / len(rounds),
        "total_s": time.perf_counter() - PROCESS_START,
        "acc": acc,
    }


def _tree_rss(root: Any) -> int:
    import psutil

    total = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


def measure(impl: str, n: int, p: float, rounds: int, timeout: float) -> dict[str, Any]:
    """Run one case in a fresh process; its result plus the peak RSS of its process tree."""
    import psutil

    cmd = [sys.executable, __file__, "--one", impl, str(n), str(p), str(rounds)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(root))
        if time.perf_counter() - start > timeout:
            for child in root.children(recursive=True):  # this case's processes, by PID
                child.kill()
            proc.kill()
            proc.wait()
            return {"impl": impl, "clients": n, "participation": p, "error": f"over {timeout} s"}
        time.sleep(0.5)
    out = proc.stdout.read() if proc.stdout else ""
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"impl": impl, "clients": n, "participation": p, "error": f"exit {proc.returncode}"}
    return {
        "impl": impl,
        "clients": n,
        "participation": p,
        "peak_rss_mb": peak / 2**20,
        "wall_s": time.perf_counter() - start,
        **json.loads(lines[-1]),
    }


def _table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| clients | per round | runner | wall s | start-up s | s/round | RSS MB | final acc |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        k = _k(r["clients"], r["participation"])
        if "error" in r:
            lines.append(f"| {r['clients']} | {k} | {r['impl']} | {r['error']} | | | | |")
            continue
        lines.append(
            f"| {r['clients']} | {k} | {r['impl']} | {r['wall_s']:.1f} | {r['startup_s']:.1f} "
            f"| {r['round_s']:.2f} "
            f"| {r['peak_rss_mb']:.0f} | {r['acc']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000, 10000])
    parser.add_argument("--participation", type=float, nargs="+", default=[0.05, 0.1, 1.0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--json", default="")
    parser.add_argument("--one", nargs=4, metavar=("IMPL", "N", "P", "ROUNDS"))
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    if args.one:
        impl, n, p, rounds = args.one
        run = run_ours if impl == "flower-suite" else run_plain
        print(json.dumps(run(int(n), float(p), int(rounds))), flush=True)
        return
    results = []
    for n in args.clients:
        for p in args.participation:
            for impl in ("plain flwr", "flower-suite"):
                results.append(measure(impl, n, p, args.rounds, args.timeout))
                print(json.dumps(results[-1]), flush=True)
    print(_table(results))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
