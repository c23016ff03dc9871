"""Robust aggregation: our strategies vs Flower's, same inputs, same process.

For each n (clients) and d (float32 parameters, in 8 arrays) the clients' models are the
global model plus N(0, 1e-3^2) noise: "close models", where float32 Gram-matrix distances
break. Timed, median of ``--repeats``:

* ours   - ``flower_suite.strategies.X.aggregate_train`` end to end (decode + rule + encode);
* flwr   - ``flwr.serverapp.strategy.X.aggregate_train`` end to end (Flower's Message API);
* legacy - ``flwr.server.strategy.aggregate.*`` on pre-decoded arrays (maths only).

Also: the worst relative error of the pairwise squared distances, ours and Flower's
(``compute_distances``), against a float64 direct-difference reference; and DETOX vs the
plain rules at p = 45, q = 5, r = 3 (aggregation stage) plus the ALIE mean-estimation check.

    python benchmarks/robust_aggregation.py                  # the full grid (~15 min)
    python benchmarks/robust_aggregation.py --n 20 --d 100000 --repeats 1   # quick
"""

from __future__ import annotations

import argparse
import functools
import gc
import logging
import statistics
import time
from collections.abc import Callable
from unittest.mock import Mock

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.server.strategy import aggregate as legacy
from flwr.serverapp import strategy as flwr_strategies
from flwr.serverapp.strategy.multikrum import compute_distances as flwr_compute_distances

from flower_suite import strategies as ours
from flower_suite.aggregation import (
    bulyan,
    coordinate_median,
    detox_aggregate,
    make_node_groups,
    multi_krum,
    weighted_mean,
)
from flower_suite.aggregation.distances import pairwise_sq_distances

NUM_ARRAYS = 8


def make_models(n: int, d: int, seed: int = 0) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    rng = np.random.default_rng(seed)
    sizes = np.full(NUM_ARRAYS, d // NUM_ARRAYS)
    sizes[-1] += d - sizes.sum()
    global_model = [rng.standard_normal(s).astype(np.float32) for s in sizes]
    clients = [
        [(g + 1e-3 * rng.standard_normal(g.size)).astype(np.float32) for g in global_model]
        for _ in range(n)
    ]
    return global_model, clients


def make_replies(clients: list[list[np.ndarray]]) -> list[Message]:
    replies = []
    for i, arrays in enumerate(clients):
        msg = Mock(spec=Message)
        msg.content = RecordDict(
            {
                "arrays": ArrayRecord({f"layer{j}": Array(a) for j, a in enumerate(arrays)}),
                "metrics": MetricRecord({"num-examples": 100}),
            }
        )
        msg.has_error.return_value = False
        msg.metadata.src_node_id = i + 1
        replies.append(msg)
    return replies


def timed(
    fn: Callable[[], object], repeats: int, setup: Callable[[], object] | None = None
) -> float:
    times = []
    for _ in range(repeats):
        arg = setup() if setup else None
        gc.collect()
        start = time.perf_counter()
        fn(arg) if setup else fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def strategy_pairs(f: int) -> dict[str, tuple[Callable, Callable, Callable | None]]:
    """rule -> (our strategy factory, Flower Message-API factory, legacy maths on results)."""
    n_keep = lambda n: n - f  # noqa: E731
    return {
        "Krum": (
            lambda: ours.Krum(num_malicious_nodes=f),
            lambda: flwr_strategies.Krum(num_malicious_nodes=f),
            lambda res: legacy.aggregate_krum(res, num_malicious=f, to_keep=0),
        ),
        "MultiKrum": (
            lambda: ours.MultiKrum(num_malicious_nodes=f),
            lambda n: flwr_strategies.MultiKrum(
                num_malicious_nodes=f, num_nodes_to_select=n_keep(n)
            ),
            lambda res: legacy.aggregate_krum(res, num_malicious=f, to_keep=n_keep(len(res))),
        ),
        "Median": (
            lambda: ours.FedMedian(),
            lambda: flwr_strategies.FedMedian(),
            lambda res: legacy.aggregate_median(res),
        ),
        "TrimmedMean": (
            lambda: ours.FedTrimmedAvg(beta=0.2),
            lambda: flwr_strategies.FedTrimmedAvg(beta=0.2),
            lambda res: legacy.aggregate_trimmed_avg(res, proportiontocut=0.2),
        ),
        "Bulyan": (
            lambda: ours.Bulyan(num_malicious_nodes=f),
            lambda: flwr_strategies.Bulyan(num_malicious_nodes=f),
            lambda res: legacy.aggregate_bulyan(
                res, num_malicious=f, aggregation_rule=legacy.aggregate_krum, to_keep=0
            ),
        ),
    }


def distance_errors(
    global_model: list[np.ndarray], clients: list[list[np.ndarray]]
) -> tuple[float, float]:
    """Worst off-diagonal relative error of ours and Flower's distances vs float64 direct."""
    models = np.stack([np.concatenate(c) for c in clients]).astype(np.float64)
    n = models.shape[0]
    reference = np.empty((n, n))
    for i in range(n):
        reference[i] = ((models - models[i]) ** 2).sum(axis=1)
    off = ~np.eye(n, dtype=bool)
    updates = torch.from_numpy(
        np.stack([np.concatenate(c) for c in clients]) - np.concatenate(global_model)
    )
    mine = pairwise_sq_distances(updates).numpy()
    theirs = flwr_compute_distances([ArrayRecord(list(c)) for c in clients])
    rel = lambda x: float(np.max(np.abs(x[off] - reference[off]) / reference[off]))  # noqa: E731
    return rel(mine), rel(theirs)


def bench_setting(n: int, d: int, args: argparse.Namespace) -> tuple[float, float] | None:
    """Print one table row per rule for (n, d); return the distance errors if measured."""
    f = (n - 3) // 4  # the largest f Bulyan accepts, used for every rule
    global_model, clients = make_models(n, d)
    global_record = ArrayRecord({f"layer{j}": Array(g) for j, g in enumerate(global_model)})
    results = [(c, 100) for c in clients]

    def fresh_replies() -> list[Message]:
        # Flower's FedMedian / FedTrimmedAvg pop the reply arrays: rebuild for every run.
        return make_replies(clients)

    for rule, (mine, flwr_factory, legacy_fn) in strategy_pairs(f).items():
        if args.rules and rule not in args.rules:
            continue
        strategy = mine()
        strategy._global = global_record  # what configure_train stores
        flwr_strategy = flwr_factory(n) if rule == "MultiKrum" else flwr_factory()
        strategy.aggregate_train(1, fresh_replies())  # warm-up (first matmul, allocator)
        t_ours = timed(lambda r, s=strategy: s.aggregate_train(1, r), args.repeats, fresh_replies)
        t_flwr = timed(
            lambda r, s=flwr_strategy: s.aggregate_train(1, r), args.repeats, fresh_replies
        )
        if rule == "Bulyan" and n > args.legacy_bulyan_max_n:
            t_legacy = float("nan")  # Flower's legacy Bulyan is O(n^2 d) in Python loops
        else:
            legacy_repeats = args.repeats if n * d <= 5e7 else 1
            # Flower's legacy Bulyan pops from the list it is given: pass a fresh one.
            t_legacy = timed(lambda lf=legacy_fn: lf(list(results)), legacy_repeats)
        print(
            f"| {n} | {d:.0e} | {rule} | {t_ours:.3f} | {t_flwr:.3f} | "
            f"{t_ours / t_flwr:.2f} | {t_legacy:.2f} | {t_legacy / t_ours:.1f} |",
            flush=True,
        )
    return distance_errors(global_model, clients) if d >= 1e6 or n <= 50 else None


def run_grid(args: argparse.Namespace) -> None:
    print("| n | d | rule | ours s | flwr Message API s | ours / flwr | legacy s | legacy / ours |")
    print("|---|---|---|---|---|---|---|---|")
    accuracy_rows = []
    for n in args.n:
        for d in args.d:
            errors = bench_setting(n, d, args)
            if errors is not None:
                accuracy_rows.append((n, d, *errors))
            gc.collect()
    print("\nPairwise squared distances vs float64 direct differences (max relative error):\n")
    print("| n | d | ours | Flower compute_distances |")
    print("|---|---|---|---|")
    for n, d, mine, theirs in accuracy_rows:
        print(f"| {n} | {d:.0e} | {mine:.1e} | {theirs:.1e} |")


def run_detox(args: argparse.Namespace) -> None:
    p, q, r, d = 45, 5, 3, args.detox_d
    rng = np.random.default_rng(0)
    groups = make_node_groups(p, r, seed=0)
    updates = np.empty((p, d), np.float32)
    for members in groups:
        updates[members] = rng.standard_normal(d).astype(np.float32)  # replicas agree exactly
    byzantine = [grp[0] for grp in groups[:q]]  # one Byzantine member in 5 groups
    updates[byzantine] = 100.0
    x = torch.from_numpy(updates)
    q_hat = q // ((r + 1) // 2)
    cases = {
        "D-Bulyan vs Bulyan": (
            lambda: detox_aggregate(
                x,
                groups,
                num_vote_groups=1,
                seed=0,
                inner=functools.partial(bulyan, num_malicious_nodes=q_hat),
                outer=weighted_mean,
            ),
            lambda: bulyan(x, num_malicious_nodes=q),
        ),
        "D-Multi-Krum vs Multi-Krum": (
            lambda: detox_aggregate(
                x,
                groups,
                num_vote_groups=2,
                seed=0,
                allow_uneven=True,
                inner=functools.partial(multi_krum, num_malicious_nodes=q_hat),
                outer=weighted_mean,
            ),
            lambda: multi_krum(x, num_malicious_nodes=q),
        ),
        "D-Med vs Med": (
            lambda: detox_aggregate(
                x, groups, num_vote_groups=5, seed=0, inner=weighted_mean, outer=coordinate_median
            ),
            lambda: coordinate_median(x),
        ),
    }
    print(f"\nDETOX aggregation stage, p={p}, q={q}, r={r}, d={d:.0e}, float32:\n")
    print("| case | DETOX s | plain s | speed-up |")
    print("|---|---|---|---|")
    for name, (detox_fn, plain_fn) in cases.items():
        t_detox, t_plain = timed(detox_fn, args.repeats), timed(plain_fn, args.repeats)
        print(f"| {name} | {t_detox:.4f} | {t_plain:.4f} | {t_plain / t_detox:.1f}x |")


def alie_mean_estimation(trials: int = 200) -> None:
    """Spec check 10 under ALIE: p=45, q=5, r=3, k=5, d=100; error = ||estimate||."""
    from scipy.stats import norm

    p, q, r, k, d = 45, 5, 3, 5, 100
    s = int(p / 2 + 1) - q
    z = float(norm.ppf((p - s) / p))
    rng = np.random.default_rng(0)
    errors_detox, errors_plain = [], []
    for trial in range(trials):
        byzantine = set(rng.choice(p, q, replace=False).tolist())
        honest_vanilla = rng.standard_normal((p, 32, d)).mean(axis=1)
        alie = honest_vanilla.mean(0) + z * honest_vanilla.std(0)
        vanilla = honest_vanilla.copy()
        vanilla[list(byzantine)] = alie
        errors_plain.append(np.linalg.norm(coordinate_median(torch.from_numpy(vanilla)).aggregate))
        groups = make_node_groups(p, r, seed=trial)
        group_means = rng.standard_normal((p // r, 96, d)).mean(axis=1)
        detox_in = np.empty((p, d))
        for g, members in enumerate(groups):
            detox_in[members] = group_means[g]
        honest_group_mean = group_means.mean(0) + z * group_means.std(0)
        detox_in[list(byzantine)] = honest_group_mean
        result = detox_aggregate(
            torch.from_numpy(detox_in),
            groups,
            num_vote_groups=k,
            seed=trial,
            inner=weighted_mean,
            outer=coordinate_median,
        )
        errors_detox.append(np.linalg.norm(result.aggregate))
    print(
        f"\nALIE mean estimation (p={p}, q={q}, r={r}, k={k}, d={d}, z={z:.4f}, {trials} trials): "
        f"mean error DETOX-median {np.mean(errors_detox):.3f} vs median {np.mean(errors_plain):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[20, 50, 100])
    parser.add_argument(
        "--d", type=lambda v: int(float(v)), nargs="+", default=[100_000, 1_000_000]
    )
    parser.add_argument("--rules", nargs="*", default=[])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--legacy-bulyan-max-n", type=int, default=50)
    parser.add_argument("--detox-d", type=lambda v: int(float(v)), default=200_000)
    parser.add_argument("--skip-grid", action="store_true")
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.ERROR)
    torch.set_num_threads(2)
    if not args.skip_grid:
        run_grid(args)
    run_detox(args)
    alie_mean_estimation()


if __name__ == "__main__":
    main()
