"""PUFFERFISH benchmarks: federated bytes/accuracy with warm-up, and CPU speed per batch.

    python benchmarks/pufferfish.py digits   [--seeds 0 1 2] [--rounds 15]
    python benchmarks/pufferfish.py resnet   [--rounds 2]      # federated, synthetic CIFAR
    python benchmarks/pufferfish.py speed    [--repeats 7] [--batch 32] [--threads N]

``digits``: the demo experiment (FedAvg, 10 clients, DigitsCNN, 2 local epochs, lr 0.1) full
rank vs PUFFERFISH (rank ratio 0.25, 5 warm-up rounds, lr x 0.25 after the switch), per seed;
bytes per round before and after the switch, final accuracy and its mean over the last three
rounds, wall seconds per round.

``resnet``: the same comparison for ResNet-18 (no stem BN, spec section 4's hybrid: stem,
first block, shortcuts and classifier full-rank) on synthetic CIFAR-shaped images, 2 clients,
1 warm-up round: bytes and CPU seconds per round. The images are synthetic (no download
here); only bytes and time are meaningful.

``speed``: ResNet-18 vs its PUFFERFISH hybrid, one SGD step (forward, backward, update) per
batch of 32x32 images on this CPU, interleaved repeats, median; and per-layer forward and
backward times of dense vs factorized layers.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from flower_suite.models import ResNet18, count_parameters
from flower_suite.models.lowrank import LowRankConv2d, LowRankLinear
from flower_suite.models.pufferfish import pufferfish_resnet18
from flower_suite.simulations import load_config, run_experiment

LOWRANK = {"lowrank.rank_ratio": 0.25, "lowrank.warmup_rounds": 5, "lowrank.lr_factor": 0.25}


def _summarise(rows: list[dict[str, Any]], warmup: int | None) -> dict[str, float]:
    accs = [r["test-acc"] for r in rows[1:]]
    times = [b["elapsed-s"] - a["elapsed-s"] for a, b in itertools.pairwise(rows[1:])]
    out = {
        "final-acc": accs[-1],
        "last3-acc": statistics.mean(accs[-3:]),
        "bytes-round-1": rows[1]["bytes-sent"] + rows[1]["bytes-received"],
        "bytes-last-round": rows[-1]["bytes-sent"] + rows[-1]["bytes-received"],
        "s-per-round": statistics.median(times),
    }
    if warmup is not None:
        after = [b["elapsed-s"] - a["elapsed-s"] for a, b in itertools.pairwise(rows[warmup + 1 :])]
        out["s-per-round-after-switch"] = statistics.median(after)
    return out


def digits(seeds: list[int], rounds: int) -> None:
    results: dict[str, list[dict[str, float]]] = {"full-rank": [], "pufferfish": []}
    for seed in seeds:
        for name, values in (("full-rank", {}), ("pufferfish", LOWRANK)):
            config = load_config("digits_fedavg", values={"seed": seed, "rounds": rounds, **values})
            rows = run_experiment(config, record=False).rows
            summary = _summarise(rows, LOWRANK["lowrank.warmup_rounds"] if values else None)
            results[name].append(summary)
            print(seed, name, {k: round(v, 4) for k, v in summary.items()}, flush=True)
    print(
        "\n| model | final acc (mean ± sd) | last-3 mean | bytes/round up+down: round 1 -> last |"
    )
    print("|---|---|---|---|")
    for name, runs in results.items():
        finals = [r["final-acc"] for r in runs]
        last3 = [r["last3-acc"] for r in runs]
        sd = statistics.stdev(finals) if len(finals) > 1 else 0.0
        print(
            f"| {name} | {statistics.mean(finals):.4f} ± {sd:.4f} | "
            f"{statistics.mean(last3):.4f} | {runs[0]['bytes-round-1']:,.0f} -> "
            f"{runs[0]['bytes-last-round']:,.0f} |"
        )
    full, low = results["full-rank"][0], results["pufferfish"][0]
    print(f"bytes cut after the switch: {full['bytes-last-round'] / low['bytes-last-round']:.2f}x")
    gap = statistics.mean(r["final-acc"] for r in results["full-rank"]) - statistics.mean(
        r["final-acc"] for r in results["pufferfish"]
    )
    print(f"accuracy gap (full - pufferfish, mean final): {gap * 100:.2f} points")


def resnet(rounds: int) -> None:
    keep = ["layers.0.0", "layers.1.0.shortcut", "layers.2.0.shortcut", "layers.3.0.shortcut"]
    base = {
        "name": "resnet18-synthetic",
        "rounds": rounds,
        "num_clients": 2,
        "data.dataset": "synthetic_cifar",
        "model.name": "resnet18",
        "model.stem_bn": False,
        "client.local_epochs": 1,
        "client.batch_size": 32,
        "client.lr": 0.05,
        "resources.num_cpus": 1,
    }
    for name, extra in (
        ("full-rank", {}),
        (
            "pufferfish",
            {
                "lowrank.rank_ratio": 0.25,
                "lowrank.warmup_rounds": 1,
                "lowrank.keep_full_rank": keep,
            },
        ),
    ):
        config = load_config("digits_fedavg", values={**base, **extra})
        rows = run_experiment(config, record=False).rows
        for row in rows[1:]:
            print(
                f"{name} round {row['round']}: acc {row['test-acc']:.3f} bytes up+down "
                f"{row['bytes-sent'] + row['bytes-received']:,.0f} elapsed {row['elapsed-s']:.1f}s",
                flush=True,
            )


def _median_time(fn: Callable[[], None], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _sgd_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def speed(repeats: int, batch: int, threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    full = ResNet18(stem_bn=False)
    low = pufferfish_resnet18(ResNet18(stem_bn=False))
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    steps = {"full": _sgd_step(full, x, y), "pufferfish": _sgd_step(low, x, y)}
    for step in steps.values():
        step()  # warm-up
    samples: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):  # interleaved, so drift hits both alike
        for name, step in steps.items():
            samples[name].append(_median_time(step, 1))
    f, p = statistics.median(samples["full"]), statistics.median(samples["pufferfish"])
    print(f"torch threads {torch.get_num_threads()}, batch {batch}, 32x32, median of {repeats}")
    print(f"ResNet-18 params {count_parameters(full):,} -> {count_parameters(low):,}")
    print(
        f"ResNet-18 SGD step: full {f * 1000:.0f} ms, pufferfish {p * 1000:.0f} ms, "
        f"speed-up {f / p:.2f}x"
    )
    layers: list[tuple[str, nn.Module, nn.Module, tuple[int, ...]]] = [
        ("Linear 512x512 r=128", nn.Linear(512, 512), LowRankLinear(512, 512, 128), (256, 512)),
        (
            "Conv 3x3 128->128 r=32 @16x16",
            nn.Conv2d(128, 128, 3, padding=1),
            LowRankConv2d(128, 128, 3, 32, padding=1),
            (batch, 128, 16, 16),
        ),
        (
            "Conv 3x3 512->512 r=128 @4x4",
            nn.Conv2d(512, 512, 3, padding=1),
            LowRankConv2d(512, 512, 3, 128, padding=1),
            (batch, 512, 4, 4),
        ),
    ]
    print("\n| layer | dense fwd ms | low-rank fwd ms | dense fwd+bwd ms | low-rank fwd+bwd ms |")
    print("|---|---|---|---|---|")
    for label, dense, factored, shape in layers:
        inp = torch.randn(shape, requires_grad=True)
        row = []
        for module in (dense, factored):
            with torch.no_grad():
                row.append(_median_time(lambda m=module, i=inp: m(i), repeats * 3))
        for module in (dense, factored):
            row.append(_median_time(lambda m=module, i=inp: m(i).sum().backward(), repeats * 3))
        print(f"| {label} | " + " | ".join(f"{t * 1000:.2f}" for t in row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    d = sub.add_parser("digits")
    d.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    d.add_argument("--rounds", type=int, default=15)
    r = sub.add_parser("resnet")
    r.add_argument("--rounds", type=int, default=2)
    s = sub.add_parser("speed")
    s.add_argument("--repeats", type=int, default=7)
    s.add_argument("--batch", type=int, default=32)
    s.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.what == "digits":
        digits(args.seeds, args.rounds)
    elif args.what == "resnet":
        resnet(args.rounds)
    else:
        speed(args.repeats, args.batch, args.threads)


if __name__ == "__main__":
    main()
