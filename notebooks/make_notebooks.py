"""Write the example notebooks (without outputs): ``python notebooks/make_notebooks.py``.

The notebooks are generated so that their code stays reviewable as plain Python here; the
test suite (``tests/test_notebooks.py``) executes them headless. Settings are small: each
notebook runs in a few minutes on 2 CPU cores.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent


def _notebook(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [
        new_markdown_cell(text.strip()) if kind == "md" else new_code_cell(text.strip())
        for kind, text in cells
    ]
    return nb


# Both notebooks find the repository's experiments/ whether run from notebooks/ or the root.
_SETUP = """
import os
from pathlib import Path

ROOT = Path.cwd() if (Path.cwd() / "experiments").is_dir() else Path.cwd().parent
OUT = Path(os.environ.get("FLOWER_SUITE_NOTEBOOK_OUT", ROOT / "bench"))  # where results go
"""

ATTACK_VS_DEFENSE = [
    (
        "md",
        """
# Attack vs defense on digits: edge-case backdoors

**Threat model** (Wang et al., *Attack of the Tails*, NeurIPS 2020; dissertation ch. 8). One
of the federation's clients is an attacker. It wants the global model to classify
*edge-case* inputs (rare, low-density "7"s of the digits data) as "1", while keeping the
main task accurate so that nobody notices. The edge-case images are absent from every honest
client's data (`data.dataset = "digits_edge"`). The **black-box** attacker only controls
its local data: it trains honestly on a mix of edge-case examples labelled "1" and clean
examples (`attack.name = "edge_blackbox"`). It joins from round `attack.start_round` on.

**Defenses** run on the server and see only model updates:

- `fedavg`: no defense (weighted mean of the updates);
- `ndc`: norm-difference clipping: each update is scaled down to L2 norm at most
  `max_norm` before the mean, limiting what one client can move.

We measure per round the **main-task accuracy** (`test-acc`, held-out digits) and the
**backdoor accuracy** (`backdoor-acc`: the share of edge-case test inputs classified as the
attacker's target). Settings here are tiny (10 clients, a dozen rounds, one seed) so the
notebook runs in minutes on 2 CPU cores; the full grid is
`flower-suite bench experiments/grids/digits_edge.toml`.
""",
    ),
    ("code", _SETUP),
    (
        "md",
        """
## The base experiment

`experiments/digits_edge.toml` is the spec's benchmark (20 clients, 120 rounds). We shrink
it with dotted overrides and check that it loads.
""",
    ),
    (
        "code",
        """
from flower_suite.simulations import load_config

SMALL = {
    "rounds": 12,
    "num_clients": 10,
    "clients_per_round": 10,
    "attack.start_round": 3,  # 2 clean warm-up rounds, then the attacker joins every round
}
base = load_config(ROOT / "experiments" / "digits_edge.toml", values=SMALL)
print(base.name, base.rounds, "rounds,", base.num_clients, "clients; attack:", base.attack.name)
""",
    ),
    (
        "md",
        """
## A 2 x 2 grid: attack x defense

`run_bench` takes a grid: a base experiment, overrides for every cell (`set`) and axes of
labelled overrides. Every cell is validated before anything runs; finished cells are
skipped when the notebook is re-run (results live in `bench/nb-attack-vs-defense/`).
""",
    ),
    (
        "code",
        """
from flower_suite.simulations.bench import run_bench

grid = {
    "name": "nb-attack-vs-defense",
    "base": str(ROOT / "experiments" / "digits_edge.toml"),
    "seeds": [0],
    "set": SMALL,
    "axis": {
        "attack": [
            {"label": "none", "attack.name": ""},
            {"label": "blackbox", "attack.name": "edge_blackbox"},
        ],
        "defense": [
            {"label": "fedavg", "strategy.name": "fedavg"},
            {"label": "ndc", "strategy.name": "ndc", "strategy.max_norm": 0.3},
        ],
    },
    "report": {"last_rounds": 3, "target": "backdoor-acc", "panels": "attack"},
}
bench = run_bench(grid, output_dir=OUT, on_progress=lambda event: print(event.line()))
""",
    ),
    (
        "md",
        """
## Final results

Mean over the last 3 rounds (one seed, so no spread). `summary.md` holds the same table.
""",
    ),
    (
        "code",
        """
from IPython.display import Markdown, display

display(Markdown(bench.files["summary"].read_text()))
finals = {
    (row["attack"], row["defense"]): (row["test-acc"], row["backdoor-acc"])
    for row in bench.summary
}
for (attack, defense), (main, backdoor) in finals.items():
    shown = "-" if backdoor is None else f"{backdoor:.3f}"
    print(f"{attack:9s} {defense:7s} main {main:.3f}  backdoor {shown}")
""",
    ),
    (
        "md",
        """
## Backdoor accuracy per round

One panel per attack, one line per defense (`backdoor-acc_vs_round.png`), and the final
main vs backdoor accuracy of every cell (`main_vs_target.png`): the attacker wants the top
right corner, a good defense keeps cells bottom right.
""",
    ),
    (
        "code",
        """
from IPython.display import Image

display(Image(filename=str(bench.files["plot_rounds"])))
display(Image(filename=str(bench.files["plot_scatter"])))
""",
    ),
    (
        "md",
        """
## Reading the results

The `none` rows are the clean references: their main accuracy is what the attacker must
preserve to stay unnoticed (the backdoor metric is recorded only when an attack is
configured, hence `-`). Compare the `blackbox` rows with them: a successful backdoor keeps
main accuracy near the clean value while backdoor accuracy rises. `update-norm-mean` (honest
clients) and `update-norm-attacker` explain what NDC does: when the bound `max_norm = 0.3`
is below the honest update norms, NDC clips every honest update too and slows learning,
which in a run this short can leave the model more, not less, exposed. The dissertation's
finding is about long runs with the bound tuned to the honest norms: norm clipping slows
edge-case backdoors but does not stop them. Run the full grid (120 rounds, 5 seeds, PGD
attacker, Krum, Multi-Krum, RFA) with `flower-suite bench experiments/grids/digits_edge.toml`
to see it.
""",
    ),
    (
        "code",
        """
# Stored for the test suite (tests/test_notebooks.py).
clean_main = finals[("none", "fedavg")][0]
attacked_backdoor = finals[("blackbox", "fedavg")][1]
print(f"RESULT clean_main={clean_main:.4f} attacked_backdoor={attacked_backdoor:.4f}")
""",
    ),
]

BYZANTINE = [
    (
        "md",
        """
# Byzantine robustness: robust aggregation under a model-poisoning attack

**Threat model.** Two of the ten clients are *Byzantine*: instead of their honest update
they send an arbitrary one. Here they use the **reverse gradient** attack: they train
honestly, then send their update multiplied by -100, pushing the global model away from
the optimum. They know only their own update (a local attacker) and attack every round.
The server does not know who they are; it only knows (for Krum) an upper bound `f = 2` on
their number.

**Defenses** (`flower_suite.strategies`): `fedavg` (the plain weighted mean, no defense),
`krum` (the single update closest to its `n - f - 2` nearest neighbours), `fedmedian`
(coordinate-wise median) and `rfa` (geometric median, Weiszfeld iterations).

The attack is a Flower client mod, `byzantine_mod` from `flower_suite.attacks`, passed to
the runner with `run_experiment(..., client_mods=[...])`; it replaces the replies of
partitions 0 and 1 only. Settings are small (digits CNN, 10 clients, 4 rounds, one seed)
so the notebook runs in minutes on 2 CPU cores.
""",
    ),
    ("code", _SETUP),
    (
        "code",
        """
from flower_suite.attacks import byzantine_mod
from flower_suite.simulations import load_config, run_experiment

ATTACKERS = [0, 1]  # partition ids of the Byzantine clients
SMALL = ["rounds=4", "num_clients=10", "partition.scheme=iid"]
DEFENSES = {
    "fedavg": {"strategy.name": "fedavg"},
    "krum": {"strategy.name": "krum", "strategy.num_malicious_nodes": len(ATTACKERS)},
    "fedmedian": {"strategy.name": "fedmedian"},
    "rfa": {"strategy.name": "rfa"},
}
# Validate every configuration before starting any simulation.
configs = {
    label: load_config("digits_fedavg", SMALL, values={**values, "name": f"byz-{label}"})
    for label, values in DEFENSES.items()
}
attack = byzantine_mod("reverse_gradient", ATTACKERS, scale=100.0)
""",
    ),
    (
        "md",
        """
## Runs

A clean FedAvg run for reference, then every defense under attack.
""",
    ),
    (
        "code",
        """
import time

runs = {}
start = time.perf_counter()
runs["fedavg (no attack)"] = run_experiment(configs["fedavg"], record=False)
for label, config in configs.items():
    runs[f"{label} (attack)"] = run_experiment(config, client_mods=[attack], record=False)
    print(f"{label:10s} final test-acc {runs[f'{label} (attack)'].final['test-acc']:.3f}")
print(f"{len(runs)} runs in {time.perf_counter() - start:.0f} s")
""",
    ),
    (
        "md",
        """
## Results

`attackers selected` is the share of the updates a robust rule kept that came from the
Byzantine clients, from the per-round `selected-partitions` record. Only selection rules
(Krum keeps one update per round) record it; FedAvg, the median and RFA take every update
as input (`-`): their robustness comes from the statistic, not from a selection.

The error tracebacks printed during the attacked FedAvg run are expected: after the first
poisoned round the global model holds NaNs, so the honest clients' training diverges and
they report errors instead of updates; the model stays at chance accuracy.
""",
    ),
    (
        "code",
        """
from IPython.display import Markdown, display


def attacker_share(rows):
    # Share of the updates the rule kept (`selected-partitions`) that came from attackers.
    kept = [p for row in rows for p in row.get("selected-partitions", [])]
    return sum(p in ATTACKERS for p in kept) / len(kept) if kept else None


lines = ["| run | final test-acc | attackers selected |", "|---|---:|---:|"]
finals = {}
for label, result in runs.items():
    finals[label] = result.final["test-acc"]
    share = attacker_share(result.rows)
    lines.append(f"| {label} | {finals[label]:.3f} | {'-' if share is None else f'{share:.2f}'} |")
display(Markdown("\\n".join(lines)))
""",
    ),
    (
        "code",
        """
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6, 4))
for label, result in runs.items():
    rounds = [row["round"] for row in result.rows]
    accuracy = [row["test-acc"] for row in result.rows]
    ax.plot(rounds, accuracy, marker="o", label=label)
ax.set_xlabel("round")
ax.set_ylabel("test accuracy")
ax.set_ylim(0, 1)
ax.grid(alpha=0.3)
ax.legend()
plt.show()
""",
    ),
    (
        "md",
        """
## Reading the results

FedAvg has breakdown point 0: a single client scaling its update by -100 dominates the mean,
and the model stays at chance accuracy. Krum, the coordinate-wise median and the geometric
median (RFA) tolerate a minority of arbitrary updates, so they learn almost as fast as
clean FedAvg here; Krum never selects an attacker's update because the reversed, scaled
updates are far from every honest one. Robustness is not free: with heterogeneous honest
data (try `partition.scheme=dirichlet`) or an omniscient attack that hides inside the
honest spread (ALIE), the robust rules lose accuracy; the benchmark harness
(`flower-suite bench`) compares such grids.
""",
    ),
    (
        "code",
        """
# Stored for the test suite (tests/test_notebooks.py).
print(
    "RESULT clean={:.4f} fedavg_attacked={:.4f} median_attacked={:.4f} krum_attacked={:.4f}".format(
        finals["fedavg (no attack)"],
        finals["fedavg (attack)"],
        finals["fedmedian (attack)"],
        finals["krum (attack)"],
    )
)
""",
    ),
]

NOTEBOOKS = {
    "01_attack_vs_defense_digits.ipynb": ATTACK_VS_DEFENSE,
    "02_byzantine_robustness.ipynb": BYZANTINE,
}


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nbformat.write(_notebook(cells), HERE / name)
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
