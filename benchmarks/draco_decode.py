"""DRACO decode time per round against the geometric median, same round, same machine.

Issue 15's acceptance: decoding at least 5x faster than the geometric median at P = 15 nodes and
d = 1e6 (spec ``draco.md`` section 8.10; the dissertation's Table 6.5 reports 7.74 s
(repetition) and 6.64 s (cyclic) against 212.31 s for GM on ResNet-152).

One round: ``P`` float64 partition gradients ``g_k ~ N(0, I_d)``, ``s`` adversaries (a fixed
random set) sending the reverse gradient ``-100·z`` (spec section 5). Timed, median of
``--repeats`` (seconds):

* ``repetition`` - ``decode_repetition`` on the ``(P, d)`` repetition messages (groups of
  ``2s + 1``, sizes as equal as possible): screening, Boyer-Moore votes, the sum;
* ``cyclic``     - ``decode_cyclic`` on the ``(P, d)`` complex128 cyclic messages: screening,
  a fresh secret ``f``, locator, consistency check, recovery;
* ``geometric median`` - ``flower_suite.aggregation.geometric_median`` on the ``(P, d)``
  float64 node gradients with the same adversaries (GM's own setting, ``A = I``: one
  gradient per node), defaults (``tol = 1e-9``);
* ``plain sum`` - ``np.sum`` over the ``(P, d)`` honest gradients: the floor no decoder beats.

``error`` is ``|u - Σ g| / |Σ g|`` of the result. GM estimates the mean node gradient (scaled
by ``P`` here); the honest gradients are independent ``N(0, I)`` draws, so their geometric
median is near 0 and its error near 1: GM is robust, not exact, which is DRACO's point.

    python benchmarks/draco_decode.py                       # P = 15, s = 3, d = 1e6
    python benchmarks/draco_decode.py --d 100000 1000000 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from flower_suite.aggregation import geometric_median
from flower_suite.coding import (
    decode_cyclic,
    decode_repetition,
    encode_cyclic,
    encode_repetition,
    make_cyclic_code,
    make_repetition_code,
)


def timed(run: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    """Median wall time of ``repeats`` calls, and the last result."""
    times, result = [], np.zeros(0)
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def one_size(p: int, s: int, d: int, repeats: int, seed: int) -> list[tuple[str, float, float]]:
    """``(method, median seconds, relative error)`` for one round of dimension ``d``."""
    rng = np.random.default_rng(seed)
    gradients = rng.standard_normal((p, d))
    truth = gradients.sum(axis=0)
    adversaries = sorted(rng.choice(p, s, replace=False).tolist())

    def attacked(messages: np.ndarray) -> np.ndarray:
        messages[adversaries] *= -100.0
        return messages

    repetition = make_repetition_code(p, s)
    cyclic = make_cyclic_code(p, s)
    repetition_messages = attacked(encode_repetition(repetition, gradients))
    cyclic_messages = attacked(encode_cyclic(cyclic, gradients))
    node_gradients = torch.from_numpy(attacked(gradients.copy()))
    runs: dict[str, Callable[[], np.ndarray]] = {
        "plain sum": lambda: gradients.sum(axis=0),
        "repetition": lambda: decode_repetition(repetition, repetition_messages).total,
        "cyclic": lambda: decode_cyclic(cyclic, cyclic_messages).total,
        "geometric median": lambda: geometric_median(node_gradients).aggregate.numpy() * p,
    }
    rows = []
    for name, run in runs.items():
        seconds, result = timed(run, repeats)
        error = float(np.linalg.norm(result - truth) / np.linalg.norm(truth))
        rows.append((name, seconds, error))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--p", type=int, default=15, help="nodes (default 15)")
    parser.add_argument("--s", type=int, default=3, help="adversaries tolerated (default 3)")
    parser.add_argument("--d", type=int, nargs="+", default=[1_000_000], help="dimensions")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"command: python {shlex.join(['benchmarks/draco_decode.py', *sys.argv[1:]])}")
    print(
        f"P = {args.p}, s = {args.s}, reverse-gradient adversaries, median of "
        f"{args.repeats}; torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at start\n"
    )
    print("| d | method | decode s/round | GM time / this | relative error |")
    print("|---|---|---|---|---|")
    for d in args.d:
        rows = one_size(args.p, args.s, d, args.repeats, args.seed)
        gm_seconds = next(seconds for name, seconds, _ in rows if name == "geometric median")
        for name, seconds, error in rows:
            print(
                f"| {d:.0e} | {name} | {seconds:.3f} | {gm_seconds / seconds:.1f}x | {error:.1e} |"
            )
    print(f"\nload average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
