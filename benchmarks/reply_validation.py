"""What the one reply validator costs, and our FedAvg against Flower's, same inputs, one run.

Timed, median of ``--repeats`` (seconds), for each n (clients) and d (float32 parameters in
8 arrays, clients = global + N(0, 1e-3^2)):

* ``validate``  - ``decode_replies``: every ``.npy`` header parsed and checked, byte counts,
  names as sets, finiteness, weights screened; rows filled once.
* ``unchecked`` - the same rows filled with ``np.frombuffer`` trusting each header (what the
  decoder did before the validator), as the floor for decoding;
* ``fedavg``    - ``flower_suite.strategies.FedAvg.aggregate_train`` end to end;
* ``flwr``      - ``flwr.serverapp.strategy.FedAvg.aggregate_train`` end to end.

    python benchmarks/reply_validation.py                 # n in {20, 50}, d in {1e5, 1e6}
    python benchmarks/reply_validation.py --n 20 --d 100000 --repeats 1   # quick
"""

from __future__ import annotations

import argparse
import io
import logging
import statistics
import time
from collections.abc import Callable
from unittest.mock import Mock

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp import strategy as flwr_strategies

from flower_suite.flower_compat import message_identity
from flower_suite.strategies import FedAvg
from flower_suite.strategies.decoding import ArrayLayout, decode_replies

NUM_ARRAYS = 8


def make_replies(n: int, d: int, seed: int = 0) -> tuple[ArrayRecord, list[Mock]]:
    rng = np.random.default_rng(seed)
    sizes = np.full(NUM_ARRAYS, d // NUM_ARRAYS)
    sizes[-1] += d - sizes.sum()
    base = {f"a{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(sizes)}
    replies = []
    for node in range(n):
        arrays = {
            k: (v + 1e-3 * rng.standard_normal(v.size)).astype(np.float32) for k, v in base.items()
        }
        msg = Mock(spec=Message)
        msg.content = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                "metrics": MetricRecord({"num-examples": 100 + node, "train-loss": 1.0}),
            }
        )
        msg.has_error.return_value = False
        msg.has_content.return_value = True
        msg.metadata.src_node_id = 1000 + node
        replies.append(msg)
    return ArrayRecord({k: Array(v) for k, v in base.items()}), replies


def unchecked_decode(replies: list[Mock], layout: ArrayLayout, reference: np.ndarray) -> None:
    """Rows filled trusting every header (np.lib.format's reader, no byte-count check)."""
    buffer = np.empty((len(replies), layout.size), np.float32)
    for row, msg in zip(buffer, replies, strict=True):
        record = msg.content["arrays"]
        for key, offset in zip(layout.keys, layout.offsets, strict=True):
            stream = io.BytesIO(record[key].data)
            np.lib.format.read_magic(stream)
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
            count = int(np.prod(shape))
            values = np.frombuffer(record[key].data, dtype, count, stream.tell())
            row[offset : offset + count] = values
        np.subtract(row, reference, out=row)


def median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (first-call costs: imports, allocator)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(n: int, d: int, repeats: int) -> dict[str, float]:
    base, replies = make_replies(n, d)
    layout = ArrayLayout.of(base)
    reference = layout.flatten(base)
    grid = Mock(spec=Grid)
    grid.get_node_ids.return_value = [1000 + i for i in range(n)]
    ours = FedAvg()
    ours.configure_train(1, base, ConfigRecord(), grid)
    theirs = flwr_strategies.FedAvg()
    out = {
        "validate": median_time(lambda: decode_replies(replies, reference, layout), repeats),
        "unchecked": median_time(lambda: unchecked_decode(replies, layout, reference), repeats),
        "fedavg": median_time(lambda: ours.aggregate_train(1, replies), repeats),
        "flwr": median_time(lambda: theirs.aggregate_train(1, replies), repeats),
    }
    ours_arrays, _ = ours.aggregate_train(1, replies)
    flwr_arrays, _ = theirs.aggregate_train(1, replies)
    assert ours_arrays is not None and flwr_arrays is not None
    out["max-abs-diff"] = max(
        float(np.max(np.abs(ours_arrays[k].numpy() - flwr_arrays[k].numpy()))) for k in base
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--d", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.ERROR)
    print(
        "| n | d | validate s | unchecked s | validate / unchecked | our FedAvg s "
        "| flwr FedAvg s | ours / flwr | max abs diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n in args.n:
        for d in args.d:
            r = run(n, d, args.repeats)
            print(
                f"| {n} | {d:.0e} | {r['validate']:.3f} | {r['unchecked']:.3f} | "
                f"{r['validate'] / r['unchecked']:.2f} | {r['fedavg']:.3f} | {r['flwr']:.3f} | "
                f"{r['fedavg'] / r['flwr']:.2f} | {r['max-abs-diff']:.1e} |",
                flush=True,
            )


if __name__ == "__main__":
    with message_identity():  # the Messages built here are created outside a Flower run
        main()
