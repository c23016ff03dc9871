"""The digits edge-case backdoor benchmark (spec ``edge-case-backdoors.md`` section 9).

Runs ``experiments/digits_edge.toml`` (K = 20 Dirichlet(0.5) clients, m = 10, MLP 64-64-10,
20 clean warm-up rounds then a fixed-frequency attacker every round) under each attack x
defense case, on Flower's Ray simulation, for the seeds given, and prints a Markdown table of
the mean +- sd over seeds of the last-10-round main and backdoor (target) accuracy and the
attacker selection rate, followed by spec checks 2-7 (and 10 with ``--fairness``).

    python benchmarks/backdoor_digits.py                       # seeds 0 1 2, all cases
    python benchmarks/backdoor_digits.py --seeds 0 1 2 3 4 --out results.json
    python benchmarks/backdoor_digits.py --rounds 60 --start-round 11 --cases fedavg ndc

``--rounds`` / ``--start-round`` shorten the run (the spec's numbers need 120 / 21).
``--engine local`` (default) runs the same ``server_main`` and ClientApps without Ray
(``flower_suite.simulations.engine.inprocess``; the simulation tests check it equals the Ray runner
bitwise); ``--engine ray`` uses Flower's Ray simulation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from flower_suite.simulations import load_config, run_experiment
from flower_suite.simulations.engine.inprocess import run_in_process

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "digits_edge.toml"
MULTIKRUM = ["strategy.name=multikrum", "strategy.num_malicious_nodes=1"]
# case key -> (label, overrides of experiments/digits_edge.toml)
CASES: dict[str, tuple[str, list[str]]] = {
    # Zero attackers rather than no [attack]: the backdoor hooks still measure the edge set.
    "none": ("no attack (FedAvg)", ["attack.num_attackers=0"]),
    "fedavg": ("black-box, FedAvg", []),
    "ndc": ("black-box, NDC M=0.3", ["strategy.name=ndc", "strategy.max_norm=0.3"]),
    "rfa": ("black-box, RFA", ["strategy.name=rfa", "strategy.nu=1e-5", "strategy.max_iter=500"]),
    "multikrum": ("black-box, Multi-Krum f=1", MULTIKRUM),
    "multikrum_pgd": ("PGD, Multi-Krum f=1", [*MULTIKRUM, "attack.name=edge_pgd"]),
    "krum": ("black-box, Krum f=1", ["strategy.name=krum", "strategy.num_malicious_nodes=1"]),
}
# Check 10: no attacker; honest partition 0 holds the 135 edge-train images labelled 7.
FAIRNESS = [
    "attack.num_attackers=0",
    "attack.attacker_fraction=0",
    "attack.honest_holders=[0]",
]
FAIRNESS_CASES: dict[str, tuple[str, list[str]]] = {
    "fair_fedavg": ("fairness, FedAvg", FAIRNESS),
    "fair_krum": ("fairness, Krum", [*FAIRNESS, "strategy.name=krum"]),
    "fair_multikrum": ("fairness, Multi-Krum", [*FAIRNESS, *MULTIKRUM]),
}
LAST = 10


def summarize(rows: Sequence[dict[str, Any]], start_round: int) -> dict[str, float]:
    """Last-10-round means and selection counts of one run."""
    last = [r for r in rows if r["round"] >= 1][-LAST:]
    attack_rows = [r for r in rows if r["round"] >= start_round]

    def total(key: str) -> float:
        return float(sum(r.get(key, 0.0) for r in attack_rows))

    out = {
        "main": statistics.fmean(r["main-acc"] for r in last),
        "backdoor": statistics.fmean(r["backdoor-acc"] for r in last),
        "attacker-participated": total("attacker-participated"),
        "attacker-selected": total("attacker-selected"),
        "holder-participated": total("honest-edge-participated"),
        "holder-selected": total("honest-edge-selected"),
        "honest-norm-median": statistics.fmean(
            r["update-norm-median"] for r in attack_rows if "update-norm-median" in r
        ),
    }
    if any("edge-clean-acc" in r for r in last):
        out["edge-clean"] = statistics.fmean(r["edge-clean-acc"] for r in last)
    return out


def run_case(
    overrides: list[str], seed: int, rounds: int, start_round: int, engine: str = "local"
) -> dict[str, float]:
    extra = [f"seed={seed}", f"rounds={rounds}", f"attack.start_round={start_round}"]
    config = load_config(EXPERIMENT, [*extra, *overrides, "name=backdoor-bench"])
    result = run_experiment(config, record=False) if engine == "ray" else run_in_process(config)
    return summarize(result.rows, start_round)


def mean_sd(values: Sequence[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def rate(summary: dict[str, float], who: str = "attacker") -> float:
    participated = summary[f"{who}-participated"]
    return summary[f"{who}-selected"] / participated if participated else float("nan")


def table(results: dict[str, dict[str, dict[str, float]]], labels: dict[str, str]) -> str:
    lines = [
        "| case | main acc | backdoor acc | attacker selected | honest norm (median) |",
        "|---|---|---|---|---|",
    ]
    for key, by_seed in results.items():
        runs = list(by_seed.values())
        rates = [rate(s) for s in runs if s["attacker-participated"]]
        selected = mean_sd(rates) if rates else "-"
        lines.append(
            f"| {labels[key]} | {mean_sd([s['main'] for s in runs])} | "
            f"{mean_sd([s['backdoor'] for s in runs])} | {selected} | "
            f"{mean_sd([s['honest-norm-median'] for s in runs])} |"
        )
    return "\n".join(lines)


def checks(results: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Spec section 9 checks 2-7 (and 10) on the means over seeds; PASS / MISS lines."""

    def mean(case: str, key: str) -> float:
        return statistics.fmean(s[key] for s in results[case].values())

    def mean_rate(case: str) -> float:
        return statistics.fmean(rate(s) for s in results[case].values())

    out: list[str] = []

    def check(name: str, ok: bool, detail: str) -> None:
        out.append(f"- check {name}: {'PASS' if ok else 'MISS'} ({detail})")

    have = set(results)
    if "none" in have:
        main, bd = mean("none", "main"), mean("none", "backdoor")
        check(
            "2 no-attack baseline", main >= 0.93 and bd <= 0.25, f"main {main:.3f}, target {bd:.3f}"
        )
    if {"none", "fedavg"} <= have:
        base, bd, main = (
            mean("none", "backdoor"),
            mean("fedavg", "backdoor"),
            mean("fedavg", "main"),
        )
        ok = bd >= 0.45 and bd >= base + 0.30 and main >= 0.90
        check("3 FedAvg backdoored", ok, f"target {bd:.3f} vs baseline {base:.3f}, main {main:.3f}")
    for num, case in (("4 NDC lowers it", "ndc"), ("5 RFA lowers it", "rfa")):
        if {"fedavg", case} <= have:
            drop = mean("fedavg", "backdoor") - mean(case, "backdoor")
            main = mean(case, "main")
            check(num, drop >= 0.10 and main >= 0.90, f"drop {drop:.3f}, main {main:.3f}")
    if {"none", "multikrum"} <= have:
        sel, bd = mean_rate("multikrum"), mean("multikrum", "backdoor")
        base = mean("none", "backdoor")
        check(
            "6 Multi-Krum blocks black-box",
            sel <= 0.30 and bd <= base + 0.15,
            f"selected {sel:.2f}, target {bd:.3f} vs baseline {base:.3f}",
        )
    if {"multikrum", "multikrum_pgd"} <= have:
        sel = mean_rate("multikrum_pgd")
        gain = mean("multikrum_pgd", "backdoor") - mean("multikrum", "backdoor")
        check(
            "7 PGD bypasses Multi-Krum",
            sel >= 0.80 and gain >= 0.10,
            f"selected {sel:.2f}, gain {gain:.3f}",
        )
    if {"fair_fedavg", "fair_krum", "fair_multikrum"} <= have:
        fed = mean("fair_fedavg", "edge-clean")
        for case, limit in (("fair_krum", 0.05), ("fair_multikrum", 0.10)):
            sel = statistics.fmean(rate(s, "holder") for s in results[case].values())
            clean = mean(case, "edge-clean")
            check(
                f"10 fairness {case[5:]}",
                sel <= limit and clean <= fed - 0.2,
                f"client 0 selected {sel:.2f}, edge clean acc {clean:.3f} vs FedAvg {fed:.3f}, "
                f"main {mean(case, 'main'):.3f}",
            )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--cases", nargs="+", default=list(CASES), choices=[*CASES, *FAIRNESS_CASES]
    )
    parser.add_argument("--fairness", action="store_true", help="also run check 10")
    parser.add_argument("--rounds", type=int, default=120)
    parser.add_argument("--start-round", type=int, default=21)
    parser.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: the same server and ClientApps in this process, no Ray (fast); "
        "ray: Flower's Ray simulation (the runner)",
    )
    parser.add_argument("--out", type=Path, help="write the per-seed summaries as JSON")
    parser.add_argument("--load", type=Path, help="print the table of a previous --out file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cases = {**CASES, **FAIRNESS_CASES}
    labels = {key: label for key, (label, _) in cases.items()}
    if args.load:
        results = json.loads(args.load.read_text())
    else:
        chosen = list(args.cases) + (list(FAIRNESS_CASES) if args.fairness else [])
        results: dict[str, dict[str, dict[str, float]]] = {key: {} for key in chosen}
        for seed in args.seeds:  # seed-major: every case has a number early in long runs
            for key in chosen:
                start = time.perf_counter()
                summary = run_case(cases[key][1], seed, args.rounds, args.start_round, args.engine)
                results[key][str(seed)] = summary
                print(
                    f"{key} seed {seed}: main {summary['main']:.3f} backdoor "
                    f"{summary['backdoor']:.3f} selected {rate(summary):.2f} "
                    f"({time.perf_counter() - start:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
                if args.out:  # keep partial results of long runs
                    args.out.write_text(json.dumps(results, indent=1))
    print(f"seeds {', '.join(next(iter(results.values())))}; last {LAST} rounds\n")
    print(table(results, labels))
    print()
    print("\n".join(checks(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
