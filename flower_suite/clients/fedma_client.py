"""Client side of FedMA (spec ``shared/spec/fedma.md`` §5, §6, §9) as ClientApp handlers.

:func:`add_fedma_handlers` registers two handlers on an existing ``ClientApp`` (usually one
from :func:`~flower_suite.clients.make_client_app`, so the same app also serves FedAvg):

* ``"train.fedma"`` runs one step of a layer-wise pass. Step 0 trains the whole local model
  (from the reconstructed model the server sends, from the server's initial model, or from a
  seeded local initialisation) and uploads layer 0. Step ``n >= 1`` installs the global layer
  ``n-1`` and the client's assignment, scatters layer ``n``'s input side to the global
  positions, freezes layers ``0..n-1`` (``requires_grad=False``: they stay bitwise unchanged),
  retrains layers ``n..N-1`` and uploads layer ``n``; at the last layer only the output layer
  trains (optionally with a scaled lr and more epochs, spec §5).
* ``"evaluate.fedma"`` evaluates a global model of any (grown) width on the local test data.

Between steps the client's model lives in ``context.state`` under a key holding its partition
id (Flower keeps a node's Context for the whole run). Replies carry ``arrays`` (the layer to
match), ``metrics`` (``train-loss``, ``num-examples``), ``client-info`` and ``fedma-info``
(``class-counts`` for the class-weighted last layer; a disclosure, spec §13).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from flower_suite.clients.client_app import (
    CLIENT_INFO_KEY,
    DataFn,
    ModelFn,
    client_info,
    client_seed,
    partition_id_of,
    train_config_from,
)
from flower_suite.matching.architecture import matchable_layers, model_for_state
from flower_suite.matching.layerwise import install_global_layer, layer_tensor_names
from flower_suite.training import TrainConfig, evaluate, select_device, train

__all__ = [
    "ASSIGNMENT_KEY",
    "FEDMA_ACTION",
    "FEDMA_EVALUATE",
    "FEDMA_INFO_KEY",
    "FEDMA_TRAIN",
    "add_fedma_handlers",
    "fedma_state_key",
]

FEDMA_ACTION = "fedma"
FEDMA_TRAIN = f"train.{FEDMA_ACTION}"
FEDMA_EVALUATE = f"evaluate.{FEDMA_ACTION}"
# In a step-n instruction the ArrayRecord holds the global layer n-1 plus this int64 array.
ASSIGNMENT_KEY = "fedma.assignment"
FEDMA_INFO_KEY = "fedma-info"
_STATE_PREFIX = "flower_suite.fedma"


def fedma_state_key(partition_id: int) -> str:
    """``context.state`` key of a client's FedMA model (``<key>`` arrays, ``<key>.meta``)."""
    return f"{_STATE_PREFIX}.{partition_id}"


def _int(config: ConfigRecord, key: str, default: int) -> int:
    return int(config[key]) if key in config else default


def _float(config: ConfigRecord, key: str, default: float) -> float:
    return float(config[key]) if key in config else default


def add_fedma_handlers(
    app: ClientApp,
    model_fn: ModelFn,
    data_fn: DataFn,
    *,
    defaults: TrainConfig | None = None,
    seed: int = 0,
    device: str | None = None,
) -> None:
    """Register FedMA's ``train.fedma`` and ``evaluate.fedma`` handlers on ``app``.

    Parameters
    ----------
    app:
        The ClientApp (its mods wrap these handlers too).
    model_fn:
        ``model_fn(context)`` builds the client's model at its own (original) size; any model
        accepted by :func:`~flower_suite.matching.matchable_layers` (MLP, DigitsCNN, LeNet,
        VGG-9, CharLSTM).
    data_fn:
        ``data_fn(context)`` returns the client's :class:`~flower_suite.clients.ClientData`.
    defaults:
        Training hyper-parameters the instruction's config leaves out.
    seed:
        Base seed when the config has no ``seed``: batches use
        ``client_seed(seed, server-round, partition)``, a local initialisation
        ``client_seed(seed, 0, partition)``.
    device:
        Torch device; by default CUDA when visible.
    """
    train_defaults = defaults or TrainConfig()

    def pick_device() -> torch.device:
        return torch.device(device) if device else select_device()

    @app.train(FEDMA_ACTION)
    def _fedma_train(msg: Message, context: Context) -> Message:
        config = msg.content.config_records.get("config") or ConfigRecord()
        step = _int(config, "fedma-step", 0)
        fedma_round = _int(config, "fedma-round", 1)
        server_round = _int(config, "server-round", 0)
        base_seed = _int(config, "seed", seed)
        partition = partition_id_of(context)
        key = fedma_state_key(partition)
        hparams = train_config_from(config, train_defaults)

        if step == 0:
            if "arrays" in msg.content.array_records:
                # Round >= 2: the reconstructed local model (spec §6); or a shared start.
                model = model_for_state(model_fn(context), msg.content["arrays"])
            else:
                # Round 1 without shared initialisation: each client its own seeded init.
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(client_seed(base_seed, 0, partition))
                    model = model_fn(context)
            layers = matchable_layers(model)
            epochs = hparams.local_epochs
        else:
            template = model_fn(context)
            layers = matchable_layers(template)
            if not 0 < step < len(layers):
                raise ValueError(f"fedma-step {step} outside [0, {len(layers)})")
            state = _stored_state(context, key, fedma_round, step)
            layer = msg.content["arrays"]
            names = layer_tensor_names(layers[step - 1])
            tensors = {name: layer[name].numpy() for name in names}
            assignment = layer[ASSIGNMENT_KEY].numpy()
            aligned = install_global_layer(
                state, layers[step - 1], layers[step], tensors, assignment
            )
            model = model_for_state(template, aligned)
            frozen = {name for spec in layers[:step] for name in layer_tensor_names(spec)}
            for name, param in model.named_parameters():
                if name in frozen:
                    param.requires_grad_(False)
            epochs = _int(config, "retrain-epochs", hparams.local_epochs)
            if step == len(layers) - 1:
                # Only the output layer still trains (spec §5: VGG-9 used lr/10, 3x epochs).
                epochs *= _int(config, "last-layer-epochs-scale", 1)
                scale = _float(config, "last-layer-lr-scale", 1.0)
                hparams = dataclasses.replace(hparams, lr=hparams.lr * scale)

        hparams = dataclasses.replace(hparams, local_epochs=epochs)
        data = data_fn(context)
        result = train(
            model,
            data.train,
            hparams,
            seed=client_seed(base_seed, server_round, partition),
            device=pick_device(),
        )
        model.to("cpu")
        trained = {k: v.detach() for k, v in model.state_dict().items()}
        context.state[key] = ArrayRecord(trained)
        context.state[f"{key}.meta"] = ConfigRecord({"fedma-round": fedma_round, "step": step})
        upload = {name: trained[name] for name in layer_tensor_names(layers[step])}
        counts = data.train.label_counts().astype(np.int64).tolist()
        content = RecordDict(
            {
                "arrays": ArrayRecord(upload),
                "metrics": MetricRecord(
                    {"train-loss": result.loss, "num-examples": result.num_examples}
                ),
                CLIENT_INFO_KEY: client_info(context),
                FEDMA_INFO_KEY: ConfigRecord({"class-counts": counts, "fedma-step": step}),
            }
        )
        return Message(content=content, reply_to=msg)

    @app.evaluate(FEDMA_ACTION)
    def _fedma_evaluate(msg: Message, context: Context) -> Message:
        data = data_fn(context)
        if data.test is None:
            raise ValueError("this client has no evaluation data")
        model = model_for_state(model_fn(context), msg.content["arrays"])
        result = evaluate(model, data.test, device=pick_device())
        metrics = MetricRecord(
            {
                "eval-loss": result.loss,
                "eval-acc": result.accuracy,
                "num-examples": result.num_examples,
            }
        )
        content = RecordDict({"metrics": metrics, CLIENT_INFO_KEY: client_info(context)})
        return Message(content=content, reply_to=msg)


def _stored_state(context: Context, key: str, fedma_round: int, step: int) -> dict[str, np.ndarray]:
    """The model this client kept after step ``step - 1`` of the same FedMA round."""
    if key not in context.state.array_records or f"{key}.meta" not in context.state:
        raise ValueError(
            f"no FedMA state for this client (key {key!r}): step {step} needs step 0 of the "
            "same round first"
        )
    meta = context.state.config_records[f"{key}.meta"]
    if (int(meta["fedma-round"]), int(meta["step"])) != (fedma_round, step - 1):
        raise ValueError(
            f"FedMA steps out of order: this client holds round {meta['fedma-round']} step "
            f"{meta['step']}, the instruction is round {fedma_round} step {step}"
        )
    record = context.state.array_records[key]
    return {name: record[name].numpy() for name in record}
