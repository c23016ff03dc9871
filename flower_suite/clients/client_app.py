"""A Message-API ClientApp that trains and evaluates any torch model.

The app is built from two factories, so it serves our simulations and users' own setups:
``model_fn(context) -> nn.Module`` and ``data_fn(context) -> ClientData``. Hyper-parameters
arrive each round in the instruction's ConfigRecord (kebab-case keys, as Flower uses), with
``defaults`` filling what the server leaves out; an optional ``lr-decay`` key scales the
learning rate by ``lr-decay ** server-round``.

Train reply: ``{"arrays": ArrayRecord(state_dict), "metrics": {"train-loss", "num-examples"},
"client-info": {"partition-id", "host", "pid", "ray-node"}}``. Evaluate reply:
``{"metrics": {"eval-loss", "eval-acc", "num-examples"}, "client-info": ...}``. Query reply:
``{"client-info": ...}`` (a deployment's runner asks once, to sample reproducibly).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

from flower_suite.data.dataset import ArrayDataset
from flower_suite.flower_compat import Mod
from flower_suite.models.lowrank_spec import model_for_config
from flower_suite.training import (
    EvalResult,
    TrainConfig,
    TrainResult,
    evaluate,
    select_device,
    train,
)
from flower_suite.wire.config import read_float, read_int
from flower_suite.wire.keys import CLIENT_INFO_KEY

# ConfigRecord key -> TrainConfig field (``proximal-mu`` is where Flower's FedProx puts mu).
CONFIG_KEYS: dict[str, str] = TrainConfig.wire_keys()


@dataclass(frozen=True)
class ClientData:
    """A client's local training data and (optionally) its local evaluation data."""

    train: ArrayDataset
    test: ArrayDataset | None = None


ModelFn = Callable[[Context], nn.Module]
DataFn = Callable[[Context], ClientData]


class TrainFn(Protocol):
    """Local training as the ClientApp calls it (``flower_suite.training.train`` by default).

    Attacks replace it (a PGD attacker projects while it trains); ``model`` holds the global
    model when called and must hold the trained one on return.
    """

    def __call__(
        self,
        model: nn.Module,
        data: ArrayDataset,
        config: TrainConfig,
        *,
        seed: int,
        device: torch.device,
        context: Context,
    ) -> TrainResult: ...


def default_train(
    model: nn.Module,
    data: ArrayDataset,
    config: TrainConfig,
    *,
    seed: int,
    device: torch.device,
    context: Context,
) -> TrainResult:
    """Plain local SGD (``context`` unused)."""
    return train(model, data, config, seed=seed, device=device)


def train_config_from(record: ConfigRecord | None, defaults: TrainConfig) -> TrainConfig:
    """Merge the round's ConfigRecord into ``defaults`` (validated by TrainConfig)."""
    if record is None:
        return defaults
    updates = {}
    for key, field in CONFIG_KEYS.items():
        if key in record:
            cast = type(getattr(defaults, field))
            updates[field] = cast(record[key])
    return dataclasses.replace(defaults, **updates)


def decayed_lr(hparams: TrainConfig, record: ConfigRecord | None, server_round: int) -> TrainConfig:
    """``lr * lr-decay ** server-round`` when the config sends ``lr-decay`` (the edge-case
    papers' ``0.998^t`` schedules); ``hparams`` unchanged (bitwise) without that key."""
    if record is None or "lr-decay" not in record:
        return hparams
    decay = read_float(record, "lr-decay")
    return dataclasses.replace(hparams, lr=hparams.lr * decay**server_round)


def client_seed(base_seed: int, server_round: int, partition_id: int) -> int:
    """A per-client, per-round seed; equal inputs give equal seeds on every machine."""
    seq = np.random.SeedSequence([base_seed, server_round, partition_id])
    return int(seq.generate_state(1, dtype=np.uint32)[0])


def client_info(context: Context) -> ConfigRecord:
    """What a reply says about its node: the partition it holds and where it runs (host,
    process and, on Ray, the Ray node), which the runner records per client."""
    return ConfigRecord({"partition-id": partition_id_of(context), **_placement()})


def _placement() -> dict[str, str | int]:
    """Host name, process id and Ray node id (when this process is a Ray worker)."""
    where: dict[str, str | int] = {"host": socket.gethostname(), "pid": os.getpid()}
    ray = sys.modules.get("ray")  # never imported here: only a Ray worker has it loaded
    if ray is not None and ray.is_initialized():
        where["ray-node"] = str(ray.get_runtime_context().get_node_id())
    return where


def partition_id_of(context: Context) -> int:
    """The client's partition id (simulation) or, failing that, its node id."""
    return int(context.node_config.get("partition-id", context.node_id))


def with_partition(context: Context, partition_id: int) -> Context:
    """A copy of ``context`` whose ``partition-id`` is ``partition_id``."""
    return Context(
        run_id=context.run_id,
        node_id=context.node_id,
        node_config={**context.node_config, "partition-id": partition_id},
        state=context.state,
        run_config=context.run_config,
    )


def load_arrays(model: nn.Module, arrays: ArrayRecord) -> None:
    """Load the server's arrays into ``model``; a clear error if names or shapes differ."""
    state = arrays.to_torch_state_dict()
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"server arrays do not fit the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise ValueError(
                f"server array {key!r} has shape {tuple(tensor.shape)}, "
                f"model expects {tuple(own[key].shape)}"
            )
    model.load_state_dict(state)


def _train_reply(msg: Message, context: Context, model: nn.Module, result: TrainResult) -> Message:
    """The train reply: the trained weights, ``train-loss`` / ``num-examples`` and client-info."""
    metrics = MetricRecord({"train-loss": result.loss, "num-examples": result.num_examples})
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": metrics,
            CLIENT_INFO_KEY: client_info(context),
        }
    )
    return Message(content=content, reply_to=msg)


def evaluate_reply(msg: Message, context: Context, result: EvalResult) -> Message:
    """The evaluate reply (also FedMA's): ``eval-loss``, ``eval-acc``, ``num-examples`` and
    client-info, the keys every strategy's weighted metric mean reads."""
    metrics = MetricRecord(
        {
            "eval-loss": result.loss,
            "eval-acc": result.accuracy,
            "num-examples": result.num_examples,
        }
    )
    content = RecordDict({"metrics": metrics, CLIENT_INFO_KEY: client_info(context)})
    return Message(content=content, reply_to=msg)


def make_client_app(
    model_fn: ModelFn,
    data_fn: DataFn,
    *,
    defaults: TrainConfig | None = None,
    seed: int = 0,
    device: str | None = None,
    mods: Sequence[Mod] = (),
    train_fn: TrainFn = default_train,
) -> ClientApp:
    """Build the ClientApp; ``mods`` wrap every handler (secure aggregation, attacks, ...).

    ``device`` pins the torch device ("cpu", "cuda"); by default CUDA is used when Ray (or
    the deployment) makes a GPU visible to this client. ``train_fn`` replaces local training
    (see :class:`TrainFn`). When the instruction's config announces a low-rank phase
    (PUFFERFISH, ``flower_suite.models.lowrank_spec``), the model from ``model_fn`` is
    factorized to that architecture before the server's arrays are loaded.
    """
    train_defaults = defaults or TrainConfig()

    def pick_device() -> torch.device:
        return torch.device(device) if device else select_device()

    app = ClientApp(mods=list(mods))

    @app.train()
    def _train(msg: Message, context: Context) -> Message:
        config = msg.content.config_records.get("config")
        hparams = train_config_from(config, train_defaults)
        server_round = read_int(config, "server-round", 0) if config is not None else 0
        hparams = decayed_lr(hparams, config, server_round)
        base_seed = read_int(config, "seed", seed) if config is not None else seed
        # A server that controls data assignment (DETOX) names the partition to train on;
        # the batch seed follows the partition, so replicas compute identical updates.
        if config is not None and "data-partition" in config:
            context = with_partition(context, read_int(config, "data-partition"))
        model = model_for_config(model_fn(context), config)
        load_arrays(model, msg.content.array_records["arrays"])
        data = data_fn(context)
        result = train_fn(
            model,
            data.train,
            hparams,
            seed=client_seed(base_seed, server_round, partition_id_of(context)),
            device=pick_device(),
            context=context,
        )
        model.to("cpu")
        return _train_reply(msg, context, model, result)

    @app.evaluate()
    def _evaluate(msg: Message, context: Context) -> Message:
        data = data_fn(context)
        if data.test is None:
            raise ValueError("this client has no evaluation data")
        model = model_for_config(model_fn(context), msg.content.config_records.get("config"))
        load_arrays(model, msg.content.array_records["arrays"])
        return evaluate_reply(msg, context, evaluate(model, data.test, device=pick_device()))

    @app.query()
    def _query(msg: Message, context: Context) -> Message:
        # Lets a simulation server learn which partition each node holds (reproducible
        # sampling, fairness records); carries no data.
        return Message(content=RecordDict({CLIENT_INFO_KEY: client_info(context)}), reply_to=msg)

    return app


def set_torch_threads(num_threads: int) -> None:
    """Match torch's intra-op threads to the client's CPU share (avoids oversubscription)."""
    if num_threads >= 1 and torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)
