"""Secure aggregation: our SecAgg+ vs Flower's SecAggPlusWorkflow + secaggplus_mod, and the
Salvia scaling grid (spec ``secagg.md`` sections 8 and 12.4-12.5).

Settings (Salvia, seed 002 lines 189-206): ``k = 51`` shares, threshold ``t = 26``, 24-bit
entries (``M = 2**24``; ``T = 2**17`` levels, ``W = 1`` so that ``n W T <= M`` up to n = 128,
``T = 2**15`` beyond), dropouts of 0 % and 5 % after the share-keys stage (the expensive case:
the dropped clients' mask keys are reconstructed and their pairwise masks removed).

* Flower: the real ``SecAggPlusWorkflow`` stage methods (setup, share keys, collect masked
  vectors, unmask) with the real ``secaggplus_mod`` on every client, connected by an
  in-process Grid; client CPU = time inside the mod (training excluded: the train handler
  returns a precomputed update), server CPU = the rest. Same n, l, k, t, c, T, M.
* Ours: :func:`flower_suite.secagg.simulate_round` (the same state machines the Flower mod and
  ``SecAggPlus`` run; messages serialized as on the wire).

Bytes per client = the client's uploads over all stages (ConfigRecord payload bytes).

    python benchmarks/secagg.py            # comparison at n=100, l=100k + the grid (~8 min)
    python benchmarks/secagg.py --quick    # small smoke run (~1 min)
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common import Code, FitIns, FitRes, Status, ndarrays_to_parameters
from flwr.compat.common import recorddict_compat as compat

from flower_suite.flower_compat import message_identity
from flower_suite.secagg import SecAggConfig, Stage, simulate_round

K, T_SHARES, MOD_BITS = 51, 26, 24
CLIP = 1.0
FIGURES = Path(__file__).parent / "figures"


def levels_for(n: int) -> int:
    """Largest power of two T with n * T <= M = 2**24 (W = 1): Salvia's overflow check."""
    return 1 << ((1 << MOD_BITS) // n).bit_length() - 1


def client_vectors(n: int, length: int, seed: int = 0) -> list[np.ndarray]:
    """n float32 updates in [-1, 1) (16 distinct rows, reused: quantization cost is the same)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(-CLIP, CLIP, size=(min(n, 16), length)).astype(np.float32)
    return [base[i % len(base)] for i in range(n)]


def dropped_ids(n: int, fraction: float) -> list[int]:
    count = round(n * fraction)
    return [1 + (i * n) // count for i in range(count)] if count else []


# -- ours -------------------------------------------------------------------------------------
def run_ours(
    n: int, length: int, dropout: float, *, k: int = K, t: int = T_SHARES
) -> dict[str, Any]:
    config = SecAggConfig(
        num_shares=k if k < n else 1.0,
        reconstruction_threshold=t,
        clipping_range=CLIP,
        quantization_range=levels_for(n),
        modulus_range=1 << MOD_BITS,
        max_weight=1,
    )
    drops = dropped_ids(n, dropout)
    start = time.perf_counter()
    outcome = simulate_round(
        client_vectors(n, length), None, config, dropouts={Stage.MASKED_INPUT: drops}, seed=1
    )
    wall = time.perf_counter() - start
    stats = outcome.stats
    alive = [s for s in stats.client_cpu_s if s not in drops]
    client = [stats.client_cpu_s[s] for s in alive]
    up = [stats.bytes_up[s] for s in alive]
    return {
        "impl": "ours",
        "n": n,
        "l": length,
        "dropout": dropout,
        "server_cpu_s": stats.server_cpu_s,
        "server_stage_cpu_s": stats.stage_server_cpu_s,
        "client_cpu_s": float(np.mean(client)),
        "client_cpu_max_s": float(np.max(client)),
        "bytes_up_per_client": float(np.mean(up)),
        "bytes_per_entry": float(np.mean(up)) / length,
        "wall_s": wall,
    }


# -- Flower -----------------------------------------------------------------------------------
class _FlowerGrid:
    """In-process Grid for the workflow: each message runs ``secaggplus_mod`` on its node."""

    def __init__(self, updates: list[np.ndarray], drop_at_collect: set[int]) -> None:
        from flwr.client.mod.secure_aggregation.secaggplus_mod import secaggplus_mod

        self.mod = secaggplus_mod
        self.updates = updates
        self.drop = drop_at_collect
        self.contexts = {
            node: Context(run_id=1, node_id=node, node_config={}, state=RecordDict(), run_config={})
            for node in range(1, len(updates) + 1)
        }
        self.client_cpu = dict.fromkeys(self.contexts, 0.0)
        self.bytes_up = dict.fromkeys(self.contexts, 0)
        self.inside = 0.0

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def _train(self, msg: Message, ctxt: Context) -> Message:
        # the user's training, precomputed: not part of secure aggregation's cost
        params = ndarrays_to_parameters([self.updates[ctxt.node_id - 1]])
        fitres = FitRes(Status(Code.OK, ""), params, 1, {})
        return Message(content=compat.fitres_to_recorddict(fitres, True), reply_to=msg)

    def send_and_receive(
        self, messages: Iterable[Message], timeout: float | None = None
    ) -> list[Message]:
        from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            stage = msg.content.config_records[RECORD_KEY_CONFIGS]["stage"]
            if node in self.drop and stage == "collect_masked_vectors":
                continue
            # a real transport serializes: never let one node's mod mutate another's copy
            msg = copy.deepcopy(msg)
            start = time.process_time()
            reply = self.mod(msg, self.contexts[node], self._train)
            spent = time.process_time() - start
            self.client_cpu[node] += spent
            self.inside += spent
            self.bytes_up[node] += _content_bytes(reply.content)
            replies.append(reply)
        return replies


def _value_bytes(value: Any) -> int:
    if isinstance(value, bytes | str):
        return len(value)
    if isinstance(value, list):
        return sum(_value_bytes(v) for v in value)
    return 8  # a number


def _content_bytes(content: RecordDict) -> int:
    """Payload bytes of a reply, counted like our ``Message.wire_bytes`` (keys + values; an
    array counts its serialized bytes). Flower's ``count_bytes`` rejects some of its own
    values, hence this counter, applied to Flower's replies only."""
    total = 0
    for name, record in content.items():
        total += len(name)
        for key, value in record.items():
            data = getattr(value, "data", None)
            total += len(key) + (len(data) if isinstance(data, bytes) else _value_bytes(value))
    return total


def run_flower(n: int, length: int, dropout: float) -> dict[str, Any]:
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
    from flwr.server.workflow.constant import Key as WorkflowKey
    from flwr.server.workflow.secure_aggregation.secaggplus_workflow import (
        SecAggPlusWorkflow,
        WorkflowState,
    )

    updates = [v.astype(np.float32) for v in client_vectors(n, length)]
    drops = set(dropped_ids(n, dropout))
    grid = _FlowerGrid(updates, drops)
    fitins = FitIns(ndarrays_to_parameters([np.zeros(length, np.float32)]), {})
    proxies = [SimpleNamespace(node_id=node) for node in grid.get_node_ids()]
    strategy = SimpleNamespace(
        configure_fit=lambda rnd, params, cm: [(p, fitins) for p in proxies],
        aggregate_fit=lambda rnd, results, failures: (None, {}),
    )
    state_records = RecordDict(
        {
            MAIN_CONFIGS_RECORD: ConfigRecord({WorkflowKey.CURRENT_ROUND: 1}),
            MAIN_PARAMS_RECORD: compat.parameters_to_arrayrecord(fitins.parameters, True),
        }
    )
    context = SimpleNamespace(
        state=state_records,
        strategy=strategy,
        client_manager=SimpleNamespace(num_available=lambda: n),
        history=SimpleNamespace(add_metrics_distributed_fit=lambda **kw: None),
    )
    workflow = SecAggPlusWorkflow(
        num_shares=K if n > K else 1.0,
        reconstruction_threshold=T_SHARES,
        max_weight=1.0,
        clipping_range=CLIP,
        quantization_range=levels_for(n),
        modulus_range=1 << MOD_BITS,
    )
    state = WorkflowState()
    stage_cpu = {}
    start_wall = time.perf_counter()
    for step in (
        workflow.setup_stage,
        workflow.share_keys_stage,
        workflow.collect_masked_vectors_stage,
        workflow.unmask_stage,
    ):
        before_inside = grid.inside
        start = time.process_time()
        ok = step(grid, context, state)  # type: ignore[arg-type]
        stage_cpu[step.__name__] = time.process_time() - start - (grid.inside - before_inside)
        if not ok:
            raise RuntimeError(f"Flower's workflow halted at {step.__name__}")
    wall = time.perf_counter() - start_wall
    alive = [node for node in grid.client_cpu if node not in drops]
    client = [grid.client_cpu[node] for node in alive]
    up = [grid.bytes_up[node] for node in alive]
    return {
        "impl": "flower",
        "n": n,
        "l": length,
        "dropout": dropout,
        "server_cpu_s": sum(stage_cpu.values()),
        "server_stage_cpu_s": stage_cpu,
        "client_cpu_s": float(np.mean(client)),
        "client_cpu_max_s": float(np.max(client)),
        "bytes_up_per_client": float(np.mean(up)),
        "bytes_per_entry": float(np.mean(up)) / length,
        "wall_s": wall,
    }


# -- analysis ---------------------------------------------------------------------------------
def linear_fit(x: list[float], y: list[float]) -> dict[str, float]:
    """Least-squares line y = a x + b and its R^2."""
    xs, ys = np.asarray(x, float), np.asarray(y, float)
    slope, intercept = np.polyfit(xs, ys, 1)
    pred = slope * xs + intercept
    ss_res = float(((ys - pred) ** 2).sum())
    ss_tot = float(((ys - ys.mean()) ** 2).sum()) or 1e-30
    return {"slope": float(slope), "intercept": float(intercept), "r2": 1.0 - ss_res / ss_tot}


def spread(values: list[float]) -> float:
    """Largest relative deviation from the mean (the spec's +-20 % check)."""
    mean = float(np.mean(values))
    return float(max(abs(v - mean) for v in values) / mean)


def plot(grid: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for row, (sweep, key, label) in enumerate((("A", "n", "clients n"), ("B", "l", "entries l"))):
        for dropout, style in ((0.0, "o-"), (0.05, "s--")):
            pts = sorted(
                (r for r in grid if r["sweep"] == sweep and r["dropout"] == dropout),
                key=lambda r: r[key],
            )
            xs = [r[key] for r in pts]
            tag = f"{int(dropout * 100)}% dropout"
            axes[row][0].plot(xs, [r["server_cpu_s"] for r in pts], style, label=tag)
            axes[row][1].plot(xs, [1e3 * r["client_cpu_s"] for r in pts], style, label=tag)
            axes[row][2].plot(xs, [r["bytes_up_per_client"] / 1e6 for r in pts], style, label=tag)
        for col, ylabel in enumerate(("server CPU (s)", "client CPU (ms)", "MB sent per client")):
            axes[row][col].set_xlabel(label)
            axes[row][col].set_ylabel(ylabel)
            axes[row][col].grid(alpha=0.3)
            axes[row][col].legend()
    fig.suptitle(f"SecAgg+ (ours): k={K}, t={T_SHARES}, 24-bit entries")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--json", type=Path, help="also write all numbers to this file")
    parser.add_argument("--no-flower", action="store_true", help="skip the Flower baseline")
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.ERROR)
    logging.getLogger("flower_suite").setLevel(logging.ERROR)
    if args.quick:
        base_n, base_l = 60, 10_000
        sweep_n, sweep_l = [60, 90, 120], [10_000, 20_000, 30_000]
    else:
        base_n, base_l = 100, 100_000
        sweep_n = [100, 200, 300, 400, 500]
        sweep_l = [100_000, 200_000, 300_000, 400_000, 500_000]

    results: dict[str, Any] = {"comparison": [], "grid": []}
    print(f"== ours vs Flower at n={base_n}, l={base_l}, k={K}, t={T_SHARES}, M=2^{MOD_BITS} ==")
    header = (
        f"{'impl':7} {'drop':>5} {'server s':>9} {'client ms':>10} {'B/entry':>8} {'wall s':>7}"
    )
    print(header)
    for dropout in (0.0, 0.05):
        pair = [run_ours(base_n, base_l, dropout)]
        if not args.no_flower:
            pair.append(run_flower(base_n, base_l, dropout))
        for r in pair:
            results["comparison"].append(r)
            print(
                f"{r['impl']:7} {dropout:5.2f} {r['server_cpu_s']:9.3f} "
                f"{1e3 * r['client_cpu_s']:10.1f} {r['bytes_per_entry']:8.2f} {r['wall_s']:7.1f}"
            )
        if len(pair) == 2:
            ours, flwr = pair
            ratios = {
                "server": ours["server_cpu_s"] / flwr["server_cpu_s"],
                "client": ours["client_cpu_s"] / flwr["client_cpu_s"],
                "bytes": ours["bytes_per_entry"] / flwr["bytes_per_entry"],
            }
            results.setdefault("ratios", {})[str(dropout)] = ratios
            print(
                f"  ratios ours/flower: server {ratios['server']:.4f} (target <= 1/3), "
                f"client {ratios['client']:.4f} (<= 1/2), bytes {ratios['bytes']:.3f} (<= 1/2)"
            )

    print("\n== scaling grid (ours) ==")
    print(
        f"{'sweep':5} {'n':>4} {'l':>7} {'drop':>5} {'server s':>9} {'client ms':>10} {'MB up':>7}"
    )
    for sweep, points in (
        ("A", [(n, base_l) for n in sweep_n]),
        ("B", [(base_n, ln) for ln in sweep_l]),
    ):
        for n, length in points:
            for dropout in (0.0, 0.05):
                r = run_ours(n, length, dropout)
                r["sweep"] = sweep
                results["grid"].append(r)
                print(
                    f"{sweep:5} {n:4d} {length:7d} {dropout:5.2f} {r['server_cpu_s']:9.3f} "
                    f"{1e3 * r['client_cpu_s']:10.1f} {r['bytes_up_per_client'] / 1e6:7.3f}"
                )

    print("\n== linear fits ==")
    fits: dict[str, Any] = {}
    for dropout in (0.0, 0.05):
        a = [r for r in results["grid"] if r["sweep"] == "A" and r["dropout"] == dropout]
        b = [r for r in results["grid"] if r["sweep"] == "B" and r["dropout"] == dropout]
        tag = f"{int(dropout * 100)}%"
        fits[tag] = {
            "server_vs_n": linear_fit([r["n"] for r in a], [r["server_cpu_s"] for r in a]),
            "server_vs_l": linear_fit([r["l"] for r in b], [r["server_cpu_s"] for r in b]),
            "client_vs_l": linear_fit([r["l"] for r in b], [r["client_cpu_s"] for r in b]),
            "bytes_vs_l": linear_fit([r["l"] for r in b], [r["bytes_up_per_client"] for r in b]),
            "client_spread_over_n": spread([r["client_cpu_s"] for r in a]),
            "bytes_spread_over_n": spread([r["bytes_up_per_client"] for r in a]),
        }
        f = fits[tag]
        sn, sl, cl = f["server_vs_n"], f["server_vs_l"], f["client_vs_l"]
        print(
            f"{tag:>3} dropout: server {1e3 * sn['slope']:.3f} ms/client (R2 {sn['r2']:.3f}); "
            f"server {1e8 * sl['slope']:.1f} ms/100k entries (R2 {sl['r2']:.3f}); "
            f"client {1e8 * cl['slope']:.1f} ms/100k entries (R2 {cl['r2']:.3f}); "
            f"client spread over n {100 * f['client_spread_over_n']:.1f}%; "
            f"bytes spread over n {100 * f['bytes_spread_over_n']:.2f}%"
        )
    results["fits"] = fits
    figure = FIGURES / ("secagg_scaling_quick.png" if args.quick else "secagg_scaling.png")
    plot(results["grid"], figure)
    print(f"\nplot: {figure}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    with message_identity():  # the Messages built here are created outside a Flower run
        main()
