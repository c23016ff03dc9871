"""In-process FedMA federation for tests: a Grid that calls a ClientApp directly (no Ray)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid

from flower_suite.clients import ClientData, make_client_app
from flower_suite.clients.client_app import partition_id_of
from flower_suite.clients.fedma_client import add_fedma_handlers
from flower_suite.data import ArrayDataset, PartitionSpec, partition_indices
from flower_suite.flower_compat import Run
from flower_suite.models import MLP
from flower_suite.training import TrainConfig


class LocalGrid(Grid):
    """Routes each message to ``app`` with the destination node's persistent Context.

    ``fail`` maps a node id to the communication round (1-based exchange index) from which
    that node answers with an error, to test dropped clients; ``tamper`` maps a node id to an
    exchange and a function that rewrites that node's reply there (malformed uploads).
    """

    def __init__(
        self,
        app: ClientApp,
        num_nodes: int,
        fail: dict[int, int] | None = None,
        tamper: dict[int, tuple[int, Callable[[Message], None]]] | None = None,
    ):
        self.app = app
        self.contexts = {
            node: Context(
                run_id=1,
                node_id=node,
                node_config={"partition-id": node - 100, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config={},
            )
            # Node ids in reverse partition order: the strategy must not rely on node order.
            for node in range(100 + num_nodes - 1, 99, -1)
        }
        self.sent: list[list[Message]] = []
        self.received: list[list[Message]] = []
        self.fail = fail or {}
        # node -> (exchange, fn): fn rewrites that node's reply in that exchange
        self.tamper = tamper or {}

    @property
    def run(self) -> Any:  # type: ignore[override]
        raise NotImplementedError

    def set_run(self, run: Run) -> None:
        """Unused."""

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        from flwr.app import Error

        messages = list(messages)
        self.sent.append(messages)
        replies = []
        for msg in reversed(messages):  # arrival order differs from sending order
            node = msg.metadata.dst_node_id
            if node in self.fail and len(self.sent) >= self.fail[node]:
                replies.append(Message(Error(code=0, reason="client crashed"), reply_to=msg))
            else:
                reply = self.app(msg, self.contexts[node])
                exchange, rewrite = self.tamper.get(node, (0, None))
                if rewrite is not None and len(self.sent) == exchange:
                    rewrite(reply)
                replies.append(reply)
        self.received.append(replies)
        return replies


def blobs(seed: int = 0, n: int = 1200, dim: int = 10, classes: int = 10) -> ArrayDataset:
    """Synthetic 10-class Gaussian blobs (spec §12, check 8)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=2.0, size=(classes, dim))
    y = rng.integers(0, classes, size=n)
    x = centers[y] + rng.normal(size=(n, dim))
    return ArrayDataset(x=x.astype(np.float32), y=y.astype(np.int64), num_classes=classes)


def mlp() -> MLP:
    """The 3-layer MLP of spec check 8: 10 -> 16 -> 12 -> 10."""
    return MLP(in_features=10, hidden=(16, 12), num_classes=10)


def federation(
    num_clients: int = 4,
    seed: int = 0,
    fail: dict[int, int] | None = None,
    tamper: dict[int, tuple[int, Callable[[Message], None]]] | None = None,
):
    """(grid, train, test): blobs split Dirichlet(0.5) over ``num_clients`` FedMA clients."""
    data = blobs(seed)
    train, test = data.subset(np.arange(1000)), data.subset(np.arange(1000, 1200))
    parts = partition_indices(train, num_clients, PartitionSpec("dirichlet", alpha=0.5, seed=seed))

    def data_fn(context: Context) -> ClientData:
        return ClientData(train=train.subset(parts[partition_id_of(context)]), test=test)

    config = TrainConfig(local_epochs=3, lr=0.05, batch_size=32)
    app = make_client_app(lambda ctx: mlp(), data_fn, defaults=config, device="cpu")
    add_fedma_handlers(app, lambda ctx: mlp(), data_fn, defaults=config, device="cpu")
    return LocalGrid(app, num_clients, fail, tamper), train, test
