"""FedMA's client side as ClientApp handlers (dissertation §5.1.3; spec fedma.md §5, §6, §9).

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
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

from flower_suite.clients.client_app import (
    ClientData,
    DataFn,
    ModelFn,
    client_info,
    client_seed,
    evaluate_reply,
    partition_id_of,
    train_config_from,
)
from flower_suite.matching.architecture import matchable_layers, model_for_state
from flower_suite.matching.layerwise import install_global_layer, layer_tensor_names
from flower_suite.matching.permutation import LayerSpec
from flower_suite.training import TrainConfig, TrainResult, evaluate, select_device, train
from flower_suite.wire.config import read_float, read_int
from flower_suite.wire.keys import (
    ASSIGNMENT_KEY,
    CLIENT_INFO_KEY,
    FEDMA_ACTION,
    FEDMA_EVALUATE,
    FEDMA_INFO_KEY,
    FEDMA_TRAIN,
)

__all__ = [
    "ASSIGNMENT_KEY",
    "FEDMA_ACTION",
    "FEDMA_EVALUATE",
    "FEDMA_INFO_KEY",
    "FEDMA_TRAIN",
    "add_fedma_handlers",
    "fedma_state_key",
]

_STATE_PREFIX = "flower_suite.fedma"


def fedma_state_key(partition_id: int) -> str:
    """``context.state`` key of a client's FedMA model (``<key>`` arrays, ``<key>.meta``)."""
    return f"{_STATE_PREFIX}.{partition_id}"


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
    handlers = _FedMAHandlers(model_fn, data_fn, defaults or TrainConfig(), seed, device)
    app.train(FEDMA_ACTION)(handlers.handle_train)
    app.evaluate(FEDMA_ACTION)(handlers.handle_evaluate)


@dataclass(frozen=True)
class _FedMAHandlers:
    """The two FedMA message handlers and the client setup they share (immutable: a node's
    only state between steps is its ``context.state``, which Flower keeps for the run)."""

    model_fn: ModelFn
    data_fn: DataFn
    defaults: TrainConfig
    seed: int
    device: str | None

    def pick_device(self) -> torch.device:
        """The pinned device, else CUDA when this client sees a GPU."""
        return torch.device(self.device) if self.device else select_device()

    def handle_train(self, msg: Message, context: Context) -> Message:
        """One step of a layer-wise pass (dissertation §5.1.3, Algorithm 3; spec §5, §6).

        Step 0 trains the whole local model; step ``n >= 1`` rebuilds the model around the
        global layer ``n-1``, freezes layers ``0..n-1`` and retrains the rest. Either way the
        reply uploads layer ``n`` for the server to match.
        """
        instruction = _read_instruction(msg, context, self.defaults, self.seed)
        if instruction.step == 0:
            model = _start_model(msg, context, self.model_fn, instruction)
            layers = matchable_layers(model)
            hparams = instruction.hparams
        else:
            model, layers = _matched_model(msg, context, self.model_fn, instruction)
            _freeze_matched_layers(model, layers, instruction.step)
            hparams = _retrain_config(instruction, num_layers=len(layers))
        data = self.data_fn(context)
        result = train(
            model,
            data.train,
            hparams,
            seed=instruction.batch_seed,
            device=self.pick_device(),
        )
        model.to("cpu")
        trained = {k: v.detach() for k, v in model.state_dict().items()}
        _keep_local_model(context, instruction, trained)
        upload = {name: trained[name] for name in layer_tensor_names(layers[instruction.step])}
        return _train_reply(msg, context, instruction.step, upload, result, data)

    def handle_evaluate(self, msg: Message, context: Context) -> Message:
        """Evaluate a global model of any (grown) width on the local test data (spec §9)."""
        data = self.data_fn(context)
        if data.test is None:
            raise ValueError("this client has no evaluation data")
        model = model_for_state(self.model_fn(context), msg.content["arrays"])
        return evaluate_reply(msg, context, evaluate(model, data.test, device=self.pick_device()))


@dataclass(frozen=True)
class _FedMAInstruction:
    """What a ``train.fedma`` instruction asks of this client (spec §9: the server's round,
    the FedMA round and the layer step; the hyper-parameters merged into the defaults)."""

    config: ConfigRecord
    step: int
    fedma_round: int
    server_round: int
    base_seed: int
    partition: int
    hparams: TrainConfig

    @property
    def state_key(self) -> str:
        """Where this client keeps its model between the steps of a pass."""
        return fedma_state_key(self.partition)

    @property
    def batch_seed(self) -> int:
        """Seeds this round's batch order: per client and server round, as FedAvg's clients."""
        return client_seed(self.base_seed, self.server_round, self.partition)

    @property
    def init_seed(self) -> int:
        """Seeds the client's own initialisation in round 1 (server round 0 in the seed)."""
        return client_seed(self.base_seed, 0, self.partition)


def _read_instruction(
    msg: Message, context: Context, defaults: TrainConfig, seed: int
) -> _FedMAInstruction:
    """Parse the instruction's config (absent keys: step 0 of FedMA round 1, ``seed``)."""
    config = msg.content.config_records.get("config") or ConfigRecord()
    return _FedMAInstruction(
        config=config,
        step=read_int(config, "fedma-step", 0),
        fedma_round=read_int(config, "fedma-round", 1),
        server_round=read_int(config, "server-round", 0),
        base_seed=read_int(config, "seed", seed),
        partition=partition_id_of(context),
        hparams=train_config_from(config, defaults),
    )


def _start_model(
    msg: Message, context: Context, model_fn: ModelFn, instruction: _FedMAInstruction
) -> nn.Module:
    """The model step 0 trains in full (FedMA with communication, dissertation §5.1.3)."""
    if "arrays" in msg.content.array_records:
        # Round >= 2: the reconstructed local model (spec §6); or a shared start.
        return model_for_state(model_fn(context), msg.content["arrays"])
    # Round 1 without shared initialisation: each client its own seeded init. The fork keeps
    # the seeding from leaking into the global torch RNG the rest of the process uses.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(instruction.init_seed)
        return model_fn(context)


def _matched_model(
    msg: Message, context: Context, model_fn: ModelFn, instruction: _FedMAInstruction
) -> tuple[nn.Module, list[LayerSpec]]:
    """Step ``n >= 1``: the model kept after step ``n-1`` with the global layer ``n-1``
    installed and layer ``n``'s input side scattered to the global positions,
    ``Pi_j W_{j,n}`` (dissertation §5.1.3, Algorithm 3; spec §5, step 4)."""
    step = instruction.step
    template = model_fn(context)
    layers = matchable_layers(template)
    if not 0 < step < len(layers):
        raise ValueError(f"fedma-step {step} outside [0, {len(layers)})")
    state = _stored_state(context, instruction.state_key, instruction.fedma_round, step)
    layer = msg.content.array_records["arrays"]
    names = layer_tensor_names(layers[step - 1])
    tensors = {name: layer[name].numpy() for name in names}
    assignment = layer[ASSIGNMENT_KEY].numpy()
    aligned = install_global_layer(state, layers[step - 1], layers[step], tensors, assignment)
    return model_for_state(template, aligned), layers


def _freeze_matched_layers(model: nn.Module, layers: list[LayerSpec], step: int) -> None:
    """Freeze layers ``0..step-1`` ("train with W_n frozen", Algorithm 3): with
    ``requires_grad=False`` they stay bitwise the global layers the server sent."""
    frozen = {name for spec in layers[:step] for name in layer_tensor_names(spec)}
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad_(False)


def _retrain_config(instruction: _FedMAInstruction, *, num_layers: int) -> TrainConfig:
    """Hyper-parameters of freeze-and-retrain: ``retrain-epochs`` (default: the local
    epochs), and at the last step, where only the output layer trains, the scaled lr and
    epochs of dissertation §5.4.1 (VGG-9 used lr/10 and 3x the epochs; spec §5)."""
    config, hparams = instruction.config, instruction.hparams
    epochs = read_int(config, "retrain-epochs", hparams.local_epochs)
    if instruction.step == num_layers - 1:
        epochs *= read_int(config, "last-layer-epochs-scale", 1)
        scale = read_float(config, "last-layer-lr-scale", 1.0)
        hparams = dataclasses.replace(hparams, lr=hparams.lr * scale)
    return dataclasses.replace(hparams, local_epochs=epochs)


def _keep_local_model(
    context: Context, instruction: _FedMAInstruction, trained: dict[str, torch.Tensor]
) -> None:
    """Keep the trained model for the next step; the meta record lets that step check it
    continues the same pass (:func:`_stored_state`)."""
    key = instruction.state_key
    context.state[key] = ArrayRecord(trained)
    context.state[f"{key}.meta"] = ConfigRecord(
        {"fedma-round": instruction.fedma_round, "step": instruction.step}
    )


def _train_reply(
    msg: Message,
    context: Context,
    step: int,
    upload: dict[str, torch.Tensor],
    result: TrainResult,
    data: ClientData,
) -> Message:
    """The layer to match, the training metrics, client-info and the class counts the
    server weights the output layer by (Algorithm 3's ``p_jk``; a disclosure, spec §13)."""
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


def _stored_state(context: Context, key: str, fedma_round: int, step: int) -> dict[str, np.ndarray]:
    """The model this client kept after step ``step - 1`` of the same FedMA round."""
    if key not in context.state.array_records or f"{key}.meta" not in context.state:
        raise ValueError(
            f"no FedMA state for this client (key {key!r}): step {step} needs step 0 of the "
            "same round first"
        )
    meta = context.state.config_records[f"{key}.meta"]
    held_round, held_step = read_int(meta, "fedma-round"), read_int(meta, "step")
    if (held_round, held_step) != (fedma_round, step - 1):
        raise ValueError(
            f"FedMA steps out of order: this client holds round {held_round} step "
            f"{held_step}, the instruction is round {fedma_round} step {step}"
        )
    record = context.state.array_records[key]
    return {name: record[name].numpy() for name in record}
