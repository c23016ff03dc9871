"""DRACO's client side as a ClientApp handler (dissertation section 6.2; spec draco.md section 7).

:func:`add_draco_handlers` registers a ``"train.draco"`` handler on an existing ``ClientApp``
(usually one from :func:`~flower_suite.clients.make_client_app`, so the same app serves every
other strategy). The instruction names the node's index ``j``, the partitions ``S_j`` the
server assigned to it and the encoding coefficients ``W[k, j]`` (all 1 for the repetition
code). For each assigned partition ``k`` (ascending) the node computes, from the global model
``w`` it received,

* ``update`` mode (spec section 7, FL framing): ``v_k`` = the local-training delta of
  ``E`` epochs on partition ``k`` alone, started from ``w`` (seeded by round and partition, so
  every replica computes the same batches);
* ``gradient`` mode (the text's one SGD iteration): ``v_k = -lr * grad L_k(w)``, the full-batch
  mean gradient of partition ``k`` (one step, no local iterations),

and the vector ``x_k = [n_k * v_k, n_k]`` (``n_k`` examples; the last entry lets the server
weight by partition size from the *decoded* sum, which the adversaries cannot bias). It
returns the coded message ``z_j = sum_k W[k, j] x_k`` (:func:`~flower_suite.coding.
encode_message`): float64 ``"real"`` and, for the cyclic code, ``"imag"`` arrays in the
``draco-message`` record. With ``draco-float64`` (default) the model and the data are cast to
float64, so replicas of one computation are bitwise identical (the repetition code's vote is
exact, spec section 7.4).

Adversaries: with ``attack`` and ``schedule`` (a local Byzantine attack of an ``[attack]``
plan), an active attacker replaces its coded message by ``attack(z_j)`` (applied to
``[Re z_j, Im z_j]`` for the cyclic code): DRACO's adversary sends any vector of the right
dimension (spec section 1). Simulation / cross-silo only: the node reads partitions the server
names, which needs data the server owns.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

from flower_suite.attacks.byzantine import UpdateAttack
from flower_suite.attacks.schedule import AttackSchedule
from flower_suite.clients.client_app import (
    DataFn,
    ModelFn,
    client_info,
    client_seed,
    decayed_lr,
    load_arrays,
    partition_id_of,
    train_config_from,
    with_partition,
)
from flower_suite.coding.allocation import encode_message
from flower_suite.data.dataset import ArrayDataset
from flower_suite.training import TrainConfig, select_device, train
from flower_suite.wire.config import read_int
from flower_suite.wire.keys import (
    CLIENT_INFO_KEY,
    DRACO_ACTION,
    DRACO_COEF_IMAG,
    DRACO_COEF_REAL,
    DRACO_COMPLEX,
    DRACO_FLOAT64,
    DRACO_INDEX,
    DRACO_MESSAGE_KEY,
    DRACO_MODE,
    DRACO_SHARDS,
)
from flower_suite.wire.updates import float_keys, mark_attacker

__all__ = ["DracoInstruction", "add_draco_handlers", "shard_vector"]

MODES = ("update", "gradient")


@dataclass(frozen=True)
class DracoInstruction:
    """What a ``train.draco`` instruction asks of a node (read by :meth:`from_config`)."""

    index: int
    coefficients: tuple[tuple[int, complex], ...]
    complex_valued: bool
    mode: str
    float64: bool

    @classmethod
    def from_config(cls, config: ConfigRecord) -> DracoInstruction:
        """Parse and check the instruction; ``ValueError`` naming the key otherwise."""
        shards = _int_list(config, DRACO_SHARDS)
        real = _float_list(config, DRACO_COEF_REAL)
        imag = _float_list(config, DRACO_COEF_IMAG)
        if not shards or len(real) != len(shards) or len(imag) != len(shards):
            raise ValueError(
                f"{DRACO_SHARDS}, {DRACO_COEF_REAL}, {DRACO_COEF_IMAG}: need one coefficient "
                f"per shard, got {len(shards)} shards, {len(real)} / {len(imag)} coefficients"
            )
        if len(set(shards)) != len(shards) or min(shards) < 0:
            raise ValueError(f"{DRACO_SHARDS}: shards must be distinct ids >= 0, got {shards}")
        mode = str(config.get(DRACO_MODE, "update"))
        if mode not in MODES:
            raise ValueError(f"{DRACO_MODE}: expected one of {MODES}, got {mode!r}")
        coefficients = tuple(
            (k, complex(re, im)) for k, re, im in zip(shards, real, imag, strict=True)
        )
        return cls(
            index=read_int(config, DRACO_INDEX),
            coefficients=coefficients,
            complex_valued=bool(config.get(DRACO_COMPLEX, False)),
            mode=mode,
            float64=bool(config.get(DRACO_FLOAT64, True)),
        )


def _int_list(config: ConfigRecord, key: str) -> list[int]:
    values = config.get(key)
    if not isinstance(values, list) or not all(isinstance(v, int) for v in values):
        raise ValueError(f"{key}: expected a list of int, got {values!r}")
    return [int(v) for v in values]


def _float_list(config: ConfigRecord, key: str) -> list[float]:
    values = config.get(key)
    if not isinstance(values, list) or not all(isinstance(v, int | float) for v in values):
        raise ValueError(f"{key}: expected a list of numbers, got {values!r}")
    return [float(v) for v in values]


def _as_float64(data: ArrayDataset) -> ArrayDataset:
    return dataclasses.replace(data, x=np.asarray(data.x, dtype=np.float64))


def _flat_float_state(model: nn.Module, keys: Sequence[str]) -> np.ndarray:
    state = model.state_dict()
    parts = [state[k].detach().cpu().to(torch.float64).numpy().reshape(-1) for k in keys]
    return np.concatenate(parts) if parts else np.zeros(0)


def _gradient_step(model: nn.Module, data: ArrayDataset, lr: float, device: torch.device) -> float:
    """One full-batch step ``w - lr * grad L_k(w)`` in place (the text's gradient ``g_k``
    scaled by ``-lr``); returns the loss at ``w``."""
    model.to(device).train()
    x = torch.as_tensor(data.x, device=device)
    y = torch.as_tensor(data.y, device=device)
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(p.grad, alpha=lr)
    return float(loss.detach())


def shard_vector(
    model: nn.Module,
    data: ArrayDataset,
    hparams: TrainConfig,
    *,
    mode: str,
    seed: int,
    device: torch.device,
    keys: Sequence[str],
) -> tuple[np.ndarray, float]:
    """``x_k = [n_k * v_k, n_k]`` for one partition, and the training loss.

    ``model`` holds the global model ``w`` (in the computation dtype) and is not modified;
    ``v_k`` runs over the float arrays ``keys`` of its state, in that order (float64).
    """
    local = copy.deepcopy(model)
    before = _flat_float_state(local, keys)
    if mode == "gradient":
        loss = _gradient_step(local, data, hparams.lr, device)
    else:
        loss = train(local, data, hparams, seed=seed, device=device).loss
    local.to("cpu")
    n = float(len(data))
    update = _flat_float_state(local, keys) - before
    return np.concatenate([n * update, [n]]), loss


def add_draco_handlers(
    app: ClientApp,
    model_fn: ModelFn,
    data_fn: DataFn,
    *,
    defaults: TrainConfig | None = None,
    seed: int = 0,
    device: str | None = None,
    attack: UpdateAttack | None = None,
    schedule: AttackSchedule | None = None,
) -> None:
    """Register DRACO's ``train.draco`` handler on ``app`` (module docstring).

    ``data_fn(context)`` is called with ``partition-id`` set to each assigned partition.
    ``attack`` / ``schedule``: a local Byzantine attack (not an omniscient one) and who acts
    when; both or neither.
    """
    if (attack is None) != (schedule is None):
        raise ValueError("add_draco_handlers: give attack and schedule together, or neither")
    if attack is not None and attack.needs_honest:
        raise ValueError(f"{attack.name} is omniscient; DRACO clients take local attacks only")
    handler = _DracoHandler(model_fn, data_fn, defaults or TrainConfig(), seed, device)
    handler.attack, handler.schedule = attack, schedule
    app.train(DRACO_ACTION)(handler.handle_train)


@dataclass
class _DracoHandler:
    model_fn: ModelFn
    data_fn: DataFn
    defaults: TrainConfig
    seed: int
    device: str | None
    attack: UpdateAttack | None = None
    schedule: AttackSchedule | None = None

    def handle_train(self, msg: Message, context: Context) -> Message:
        config = msg.content.config_records.get("config")
        if config is None:
            raise ValueError("train.draco: the instruction carries no 'config' record")
        instruction = DracoInstruction.from_config(config)
        server_round = read_int(config, "server-round", 0)
        base_seed = read_int(config, "seed", self.seed)
        hparams = decayed_lr(train_config_from(config, self.defaults), config, server_round)
        received = msg.content.array_records["arrays"]
        model = self.model_fn(context)
        load_arrays(model, received)
        if instruction.float64:
            model = model.double()
        device = torch.device(self.device) if self.device else select_device()
        keys = float_keys(received)
        vectors, losses, total = {}, [], 0
        for k, _ in instruction.coefficients:
            data = self.data_fn(with_partition(context, k)).train
            data = _as_float64(data) if instruction.float64 else data
            vectors[k], loss = shard_vector(
                model,
                data,
                hparams,
                mode=instruction.mode,
                seed=client_seed(base_seed, server_round, k),
                device=device,
                keys=keys,
            )
            losses.append(loss)
            total += len(data)
        message = encode_message(
            instruction.coefficients, vectors, complex_valued=instruction.complex_valued
        )
        attacked = self._maybe_attack(message, context, server_round)
        if attacked is not None:
            message = attacked
        reply = _reply(msg, context, message, instruction, float(np.mean(losses)), total)
        if attacked is not None and self.attack is not None:
            mark_attacker(reply, self.attack.name, server_round)
        return reply

    def _maybe_attack(
        self, message: np.ndarray, context: Context, server_round: int
    ) -> np.ndarray | None:
        """The attacker's message, or None when this node is honest this round."""
        if self.attack is None or self.schedule is None:
            return None
        partition = partition_id_of(context)
        if not self.schedule.is_active(partition, server_round):
            return None
        stacked = (
            np.concatenate([message.real, message.imag]) if np.iscomplexobj(message) else message
        )
        own = torch.from_numpy(np.ascontiguousarray(stacked, dtype=np.float64))[None, :]
        generator = torch.Generator().manual_seed(client_seed(self.seed, server_round, partition))
        bad = self.attack(own, None, generator)[0].numpy().astype(np.float64)
        if np.iscomplexobj(message):
            half = message.size
            return bad[:half] + 1j * bad[half:]
        return bad


def _reply(
    msg: Message,
    context: Context,
    message: np.ndarray,
    instruction: DracoInstruction,
    loss: float,
    num_examples: int,
) -> Message:
    arrays = {"real": Array(np.ascontiguousarray(message.real, dtype=np.float64))}
    if instruction.complex_valued:
        arrays["imag"] = Array(np.ascontiguousarray(message.imag, dtype=np.float64))
    content = RecordDict(
        {
            DRACO_MESSAGE_KEY: ArrayRecord(arrays),
            "metrics": MetricRecord({"train-loss": loss, "num-examples": num_examples}),
            CLIENT_INFO_KEY: client_info(context),
        }
    )
    return Message(content=content, reply_to=msg)
