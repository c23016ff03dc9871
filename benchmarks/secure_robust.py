"""Secure + robust (issue 17): what a round costs the server and a client.

Through the Flower layer (real ``secagg_mod`` on every client, ``SecAggPlus`` /
``SecureRobust`` / ``FedMedian`` on the server, an in-process Grid; the train handler returns
a precomputed update, so training is excluded):

* plain SecAgg+ FedAvg over all n clients (``num_shares = 1.0``: SecAgg, full graph),
* plain median (no secure aggregation: the server decodes n updates and takes the median),
* ``SecureRobust(FedMedian(), group_size=g)``: one SecAgg+ instance per group, median of the
  n // g group means.

Server CPU = the strategy's time outside the clients; client CPU = the mean time one client
spends in the mod per round. Accuracy under attack: ``experiments/grids/
digits_secure_robust.toml`` (run with ``flower-suite bench``).

    python benchmarks/secure_robust.py [--clients 40 100] [--length 100000] [--groups 4 10]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from flower_suite.clients.secagg_mod import make_secagg_mod
from flower_suite.flower_compat import Run, message_identity
from flower_suite.strategies import FedMedian, SecAggPlus, SecureRobust

CLIP, LEVELS = 1.0, 2**16


class TimedGrid(Grid):
    """Delivers each message to its node's secure mod in process, timing each node's CPU."""

    def __init__(self, updates: dict[int, np.ndarray], secure: bool) -> None:
        self.updates, self.secure = updates, secure
        self.mod = make_secagg_mod(source=None)
        self.contexts = {
            n: Context(run_id=1, node_id=n, node_config={}, state=RecordDict(), run_config={})
            for n in updates
        }
        self.client_cpu: dict[int, float] = defaultdict(float)

    def train(self, msg: Message, context: Context) -> Message:
        local = msg.content["arrays"]["w"].numpy() + self.updates[context.node_id]
        content = RecordDict(
            {
                "arrays": ArrayRecord({"w": Array(local.astype(np.float32))}),
                "metrics": MetricRecord({"num-examples": 10}),
            }
        )
        return Message(content=content, reply_to=msg)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.updates)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        replies = []
        for msg in messages:
            node = int(msg.metadata.dst_node_id)
            start = time.process_time()
            try:
                if self.secure:
                    reply = self.mod(msg, self.contexts[node], self.train)
                else:
                    reply = self.train(msg, self.contexts[node])
            except Exception as err:  # as a ClientApp: an error reply
                reply = Message(error=Error(code=0, reason=str(err)), reply_to=msg)
            self.client_cpu[node] += time.process_time() - start
            replies.append(reply)
        return replies

    def create_message(self, *a: Any, **k: Any) -> Message:
        raise NotImplementedError

    def push_messages(self, *a: Any, **k: Any) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, *a: Any, **k: Any) -> Iterable[Message]:
        raise NotImplementedError

    @property
    def run(self) -> Any:  # type: ignore[override]
        raise NotImplementedError

    def set_run(self, run: Run) -> None:
        raise NotImplementedError


def one_round(kind: str, n: int, length: int, group: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    updates = {100 + i: rng.normal(0, 0.05, length) for i in range(n)}
    grid = TimedGrid(updates, secure=kind != "median")
    start = ArrayRecord({"w": Array(rng.normal(0, 1, length).astype(np.float32))})
    secagg = dict(clipping_range=CLIP, quantization_range=LEVELS, max_weight=10)
    config = ConfigRecord({})
    wall = time.perf_counter()
    cpu = time.process_time()
    if kind == "median":
        median = FedMedian(min_available_nodes=n, min_train_nodes=n)
        replies = grid.send_and_receive(median.configure_train(1, start, config, grid))
        arrays, _ = median.aggregate_train(1, replies)
    elif kind == "secagg":
        plain = SecAggPlus(FedAvg(min_available_nodes=n, min_train_nodes=n), **secagg)
        arrays, _ = plain.train_round(grid, 1, start, config)
    else:
        inner = FedMedian(min_available_nodes=n, min_train_nodes=n)
        arrays, _ = SecureRobust(inner, group, **secagg).train_round(grid, 1, start, config)
    assert arrays is not None
    client = sum(grid.client_cpu.values())
    return {
        "kind": kind if kind != "grouped" else f"secure median g={group}",
        "clients": n,
        "server_cpu_s": time.process_time() - cpu - client,
        "client_cpu_s": client / n,
        "wall_s": time.perf_counter() - wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[40, 100])
    parser.add_argument("--length", type=int, default=100_000)
    parser.add_argument("--groups", type=int, nargs="+", default=[4, 10])
    args = parser.parse_args()
    print(f"d = {args.length}; one round each, CPU seconds (2-core machine)")
    print("| clients | aggregation | server CPU s | client CPU s (mean) | round wall s |")
    print("|---|---|---:|---:|---:|")
    with message_identity():
        for n in args.clients:
            cases = [("secagg", 0), ("median", 0), *[("grouped", g) for g in args.groups]]
            for kind, group in cases:
                r = one_round(kind, n, args.length, group)
                print(
                    f"| {n} | {r['kind']} | {r['server_cpu_s']:.3f} | {r['client_cpu_s']:.4f} "
                    f"| {r['wall_s']:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
