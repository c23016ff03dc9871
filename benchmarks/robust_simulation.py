"""Final test accuracy of each strategy when one client sends a huge update (+1000).

Digits, 8 clients all sampled, 6 rounds, the demo's client settings; the attacker is
partition 0. Also without the attacker, for reference.

    python benchmarks/robust_simulation.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "simulations"))

from test_robust_simulation import huge_update_mod

from flower_suite.simulations import load_config, run_experiment

STRATEGIES = {
    "FedAvg": ["strategy.name=fedavg"],
    "Krum (f=1)": ["strategy.name=krum", "strategy.num_malicious_nodes=1"],
    "Multi-Krum (f=1)": ["strategy.name=multikrum", "strategy.num_malicious_nodes=1"],
    "Median": ["strategy.name=fedmedian"],
    "Trimmed mean (0.2)": ["strategy.name=fedtrimmedavg", "strategy.beta=0.2"],
    "Bulyan (f=1)": ["strategy.name=bulyan", "strategy.num_malicious_nodes=1"],
    "RFA": ["strategy.name=rfa"],
}


def main() -> None:
    print("| strategy | final acc, no attacker | final acc, one +1000 client |")
    print("|---|---|---|")
    for name, overrides in STRATEGIES.items():
        accs = []
        for mods in ((), (huge_update_mod,)):
            config = load_config("digits_fedavg", ["num_clients=8", "rounds=6", *overrides])
            result = run_experiment(config, client_mods=list(mods), record=False)
            accs.append(result.final["test-acc"])
        print(f"| {name} | {accs[0]:.3f} | {accs[1]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
