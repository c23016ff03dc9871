"""ATOMO in federated training: accuracy vs bytes uploaded, codec time vs training time, and
robust rules with and without spectral ATOMO under a Byzantine attack (issue 14; dissertation
ch. 3, spec ``atomo.md`` §3-4).

    python benchmarks/atomo_training.py                     # every part (811 s on 2 busy cores)
    python benchmarks/atomo_training.py --parts digits      # one part: digits, mnist, robust
    python benchmarks/atomo_training.py --parts overhead    # codec time only (MNIST, spectral
                                                            # ATOMO, float32 vs float64 SVD)
    python benchmarks/atomo_training.py --mnist-budgets 4 8 16   # spectral budgets to try

Every run goes through the experiment config (``[compression]``) and the in-process engine
(``run_in_process``: the same ``server_main`` and ClientApps as on Ray, no Ray start-up), so
the compression mod runs on every client and ``Compressed`` decodes before the strategy.

- **Accuracy vs bytes** (digits and real MNIST): none, QSGD 2- and 4-bit, TernGrad, spectral
  ATOMO at each budget and entry-wise ATOMO at the budget whose expected bytes on a real
  first-round update equal those of the first spectral budget (matched bytes, by bisection on
  the compressors' exact byte formulas). Upload = the grid's metered bytes received (the codec
  payloads plus array names), download = bytes sent (the dense model to each sampled client).
- **Codec time vs training time** (from the MNIST runs): a client mod inside the compression mod
  times the local training of every train message and then encodes (``compress``) and
  decodes (``decompress``) the same update with the run's compressor; the server's decoding
  time per round (``compression-decode-s``) is reported too. Torch uses one thread per client.
  The ``overhead`` part measures only this, for spectral ATOMO at the MNIST budgets with the
  SVD in the update's dtype (float32, the default) and in float64 (``svd_float64 = true``),
  alternating, over ``--overhead-rounds`` rounds of the same MNIST setup.
- **Robust rules under attack** (digits): 10 clients, 2 of them send ``-100 x`` their update
  (``reverse_gradient``) every round; FedAvg, FedMedian, trimmed mean (beta 0.2) and Krum
  (f = 2), each uncompressed and with spectral ATOMO (the attackers' updates are compressed
  by their own mod, like everyone's).

The test set is evaluated only where a table needs it (final round) to spare the CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from flwr.app import ArrayRecord, Context, Message, MessageType

from flower_suite.clients.compression_mod import update_tensors
from flower_suite.compression import Compressor, layouts_of
from flower_suite.flower_compat import ClientAppCallable, Mod
from flower_suite.simulations import load_config
from flower_suite.simulations.config import ExperimentConfig
from flower_suite.simulations.engine.hooks import (
    HookContext,
    HookFactory,
    RoundHook,
    communication,
    test_set_evaluation,
)
from flower_suite.simulations.engine.inprocess import run_in_process
from flower_suite.simulations.engine.runner import prepare

MNIST_PATH = "/work/shared/data/mnist"
FIXED: list[tuple[str, list[str]]] = [
    ("none", []),
    ("QSGD 4-bit", ["compression.name=qsgd", "compression.bits=4"]),
    ("QSGD 2-bit", ["compression.name=qsgd", "compression.bits=2"]),
    ("TernGrad", ["compression.name=terngrad"]),
]
RULES: list[tuple[str, list[str]]] = [
    ("FedAvg", ["strategy.name=fedavg"]),
    ("FedMedian", ["strategy.name=fedmedian"]),
    ("trimmed mean (beta 0.2)", ["strategy.name=fedtrimmedavg", "strategy.beta=0.2"]),
    ("Krum (f=2)", ["strategy.name=krum", "strategy.num_malicious_nodes=2"]),
]


# -- measurement pieces ------------------------------------------------------------------------
def evaluate_at(rounds: set[int]) -> HookFactory:
    """Test-set evaluation in the given rounds only."""

    def factory(ctx: HookContext) -> RoundHook:
        evaluate = test_set_evaluation(ctx)

        def hook(server_round: int, arrays: ArrayRecord) -> Mapping[str, Any]:
            return evaluate(server_round, arrays) if server_round in rounds else {}

        return hook

    return factory


@dataclass
class CodecTimes:
    """Per train message: local training, encode and decode seconds."""

    train_s: list[float] = field(default_factory=list)
    encode_s: list[float] = field(default_factory=list)
    decode_s: list[float] = field(default_factory=list)


def timing_mod(compressor: Compressor, times: CodecTimes) -> Mod:
    """Times the inner app's training, then the codec on the same update (inside the
    compression mod, which compresses the reply again for the wire)."""

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        start = time.perf_counter()
        reply = call_next(msg, context)
        trained_s = time.perf_counter() - start
        if msg.metadata.message_type != MessageType.TRAIN or reply.has_error():
            return reply
        update = update_tensors(msg.content["arrays"], reply.content["arrays"])
        generator = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        payload = compressor.compress(update, generator)
        encoded_s = time.perf_counter() - start
        compressor.decompress(payload, layouts_of(update))
        times.train_s.append(trained_s)
        times.encode_s.append(encoded_s)
        times.decode_s.append(time.perf_counter() - start - encoded_s)
        return reply

    return mod


@dataclass
class Outcome:
    label: str
    config: ExperimentConfig
    rows: list[dict[str, Any]]
    times: CodecTimes
    wall_s: float

    @property
    def accuracy(self) -> float:
        return float(self.rows[-1]["test-acc"])

    def total(self, key: str) -> float:
        return sum(float(row.get(key, 0.0)) for row in self.rows)


def run(label: str, base: str, overrides: Sequence[str], *, timed: bool = False) -> Outcome:
    config = load_config(base, list(overrides))
    times = CodecTimes()
    mods = [timing_mod(config.compression.build(), times)] if timed else []
    hooks = (evaluate_at({config.rounds}), communication)
    start = time.perf_counter()
    result = run_in_process(config, hooks=hooks, client_mods=mods)
    outcome = Outcome(label, config, result.rows, times, time.perf_counter() - start)
    print(
        f"  {label}: acc {outcome.accuracy:.4f}, up {outcome.total('bytes-received') / 1e6:.3f} MB"
        f" ({outcome.wall_s:.0f} s)",
        flush=True,
    )
    return outcome


# -- matched bytes -----------------------------------------------------------------------------
def first_update(base: str, overrides: Sequence[str]) -> dict[str, torch.Tensor]:
    """One client's real round-1 update (partition 0, the run's hyper-parameters)."""
    from flower_suite.training import train

    config = load_config(base, list(overrides))
    task = prepare(config)
    model = task.build_model(seed=config.seed)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, task.client_data(0).train, task.train_config, seed=config.seed)
    return {k: v - before[k] for k, v in model.state_dict().items() if v.is_floating_point()}


def expected_bytes(name: str, budget: float, update: Mapping[str, torch.Tensor]) -> float:
    from flower_suite.compression import COMPRESSORS

    compressor = COMPRESSORS.create(name, budget=budget)
    return sum(compressor.expected_bytes(t) for t in update.values())


def matched_entrywise_budget(update: Mapping[str, torch.Tensor], target: float) -> float:
    """The entry-wise budget whose expected bytes on ``update`` equal ``target`` (bisection)."""
    low, high = 1.0, float(max(t.numel() for t in update.values()))
    for _ in range(40):
        middle = (low * high) ** 0.5
        if expected_bytes("atomo_entrywise", middle, update) < target:
            low = middle
        else:
            high = middle
    return round((low + high) / 2, 1)


def spectral_overrides(budget: float) -> list[str]:
    return ["compression.name=atomo_spectral", f"compression.budget={budget}"]


# -- the parts ---------------------------------------------------------------------------------
def accuracy_vs_bytes(
    title: str, base: str, common: list[str], budgets: Sequence[float], *, timed: bool
) -> list[Outcome]:
    print(f"\n{title}: {' '.join(common)}", flush=True)
    update = first_update(base, common)
    spectral_bytes = expected_bytes("atomo_spectral", budgets[0], update)
    entry_budget = matched_entrywise_budget(update, spectral_bytes)
    runs = [
        *FIXED,
        *((f"spectral ATOMO s={b:g}", spectral_overrides(b)) for b in budgets),
        (
            f"entry-wise ATOMO s={entry_budget:g}",
            ["compression.name=atomo_entrywise", f"compression.budget={entry_budget}"],
        ),
    ]
    outcomes = [run(label, base, [*common, *extra], timed=timed) for label, extra in runs]
    print_accuracy_table(outcomes)
    if timed:
        print_timing_table(outcomes)
    return outcomes


def print_accuracy_table(outcomes: Sequence[Outcome]) -> None:
    dense = outcomes[0]
    print(
        "\n| compressor | final test acc | vs none (points) | upload MB | upload vs none "
        "| download MB | wall s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for o in outcomes:
        up, down = o.total("bytes-received"), o.total("bytes-sent")
        ratio = dense.total("bytes-received") / up
        print(
            f"| {o.label} | {o.accuracy:.4f} | {100 * (o.accuracy - dense.accuracy):+.2f} | "
            f"{up / 1e6:.3f} | {ratio:.1f}x fewer | {down / 1e6:.2f} | {o.wall_s:.0f} |"
        )


def print_timing_table(outcomes: Sequence[Outcome]) -> None:
    print(
        "\n| compressor | train s / client round | encode ms | decode ms (client copy) | "
        "server decode ms / round | (encode + decode) / train |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for o in outcomes:
        t = o.times
        train, enc, dec = (statistics.median(v) for v in (t.train_s, t.encode_s, t.decode_s))
        decode_rows = [
            float(r["compression-decode-s"]) for r in o.rows if "compression-decode-s" in r
        ]
        server = 1e3 * statistics.median(decode_rows) if decode_rows else 0.0
        share = sum(t.encode_s + t.decode_s) / sum(t.train_s)
        print(
            f"| {o.label} | {train:.2f} | {1e3 * enc:.1f} | {1e3 * dec:.1f} | {server:.1f} | "
            f"{100 * share:.2f}% |"
        )


def codec_overhead(base: str, common: list[str], budgets: Sequence[float]) -> None:
    """Codec time vs training time of spectral ATOMO, float32 and float64 SVD, same setup."""
    print(f"\nCodec overhead, MNIST: {' '.join(common)}", flush=True)
    outcomes = [
        run(
            f"spectral ATOMO s={b:g}" + (" (float64 SVD)" if f64 else ""),
            base,
            [*common, *spectral_overrides(b), f"compression.svd_float64={str(f64).lower()}"],
            timed=True,
        )
        for b in budgets
        for f64 in (False, True)
    ]
    print_timing_table(outcomes)


def robust_rules(common: list[str], budget: float) -> None:
    print(f"\nRobust rules, digits: {' '.join(common)}", flush=True)
    attack = ["attack.name=reverse_gradient", "attack.num_attackers=2"]
    spectral = spectral_overrides(budget)
    table: list[tuple[str, list[float]]] = []
    for rule, overrides in RULES:
        accs = []
        for extra in ([], spectral, attack, [*attack, *spectral]):
            outcome = run(
                f"{rule} {' '.join(extra)}", "digits_fedavg", [*common, *overrides, *extra]
            )
            accs.append(outcome.accuracy)
        table.append((rule, accs))
    print(
        f"\n| rule | no attack | no attack + spectral s={budget:g} | 2 attackers | "
        f"2 attackers + spectral s={budget:g} |"
    )
    print("|---|---:|---:|---:|---:|")
    for rule, accs in table:
        print(f"| {rule} | " + " | ".join(f"{a:.4f}" for a in accs) + " |")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--parts", nargs="+", default=["digits", "mnist", "robust"])
    parser.add_argument("--digits-rounds", type=int, default=10)
    parser.add_argument("--digits-budgets", type=float, nargs="+", default=[2.0, 4.0])
    parser.add_argument("--mnist-rounds", type=int, default=4)
    parser.add_argument("--mnist-clients", type=int, default=4, help="sampled per round, of 20")
    parser.add_argument("--mnist-budgets", type=float, nargs="+", default=[16.0, 8.0])
    parser.add_argument("--overhead-rounds", type=int, default=2)
    parser.add_argument("--robust-rounds", type=int, default=8)
    parser.add_argument("--robust-budget", type=float, default=4.0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(1)
    digits = [f"rounds={args.digits_rounds}", "num_clients=10"]
    mnist = [
        f"rounds={args.mnist_rounds}",
        "num_clients=20",
        f"clients_per_round={args.mnist_clients}",
        f"data.path='{MNIST_PATH}'",
        "partition.scheme=iid",
    ]
    parts: dict[str, Callable[[], object]] = {
        "digits": lambda: accuracy_vs_bytes(
            "Digits", "digits_fedavg", digits, args.digits_budgets, timed=False
        ),
        "mnist": lambda: accuracy_vs_bytes(
            "MNIST", "experiments/mnist_lenet.toml", mnist, args.mnist_budgets, timed=True
        ),
        "overhead": lambda: codec_overhead(
            "experiments/mnist_lenet.toml",
            [f"rounds={args.overhead_rounds}", *mnist[1:]],
            args.mnist_budgets,
        ),
        "robust": lambda: robust_rules(
            [f"rounds={args.robust_rounds}", "num_clients=10"], args.robust_budget
        ),
    }
    for part in args.parts:
        parts[part]()
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
