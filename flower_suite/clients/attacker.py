"""The attacker ClientApp pieces: turn an honest ClientApp into an attacker (Flower adapter).

The attack maths is framework-free in :mod:`flower_suite.attacks`; this module wires it into
Flower's client side.

Three composable pieces, plus :func:`make_attacker_app` which wires them in one line:

- :func:`byzantine_mod`: a client mod for **local** update attacks (reverse gradient, sign
  flip, constant, Gaussian noise). The wrapped app trains honestly; in active rounds the
  attacker partition's reply is replaced by ``global + attack(update)``. Omniscient attacks
  (ALIE, IPM) need the round's honest updates: use
  :class:`flower_suite.byzantine_injector.ByzantineInjector` instead.
- :func:`make_attacker_train_fn`: a ``TrainFn`` for the edge-case attackers: the black-box
  attacker (poisoned local data, honest training) and PGD with or without model replacement.
- :func:`poisoned_data_fn`: a ``data_fn`` wrapper that poisons the attacker's training data
  (black-box edge-case mix, label flipping) for apps whose training cannot be replaced.

Round-dependent behaviour (fixed-frequency schedules, PGD radius decay) needs the server
round, which only the instruction carries: :func:`attack_context_mod` (added by
:func:`make_attacker_app`) stores it in ``context.state`` for the wrapped pieces, and marks
attacking replies with a ``"attack-info"`` ConfigRecord ``{"attacker": True, "attack":
name, "server-round": t}``. That record is for **measurement only** (selection rates in
benchmarks); strategies read arrays and metrics, and a defense must never look at it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from flwr.app import ConfigRecord, Context, Message, MessageType
from flwr.clientapp import ClientApp
from torch import nn

from flower_suite.attacks.byzantine import BYZANTINE_ATTACKS, UpdateAttack
from flower_suite.attacks.pgd import PGDTrain
from flower_suite.attacks.poison import DATA_POISONS, Poison
from flower_suite.attacks.schedule import AttackSchedule, FixedPool, as_schedule
from flower_suite.clients.client_app import (
    ClientData,
    DataFn,
    ModelFn,
    TrainFn,
    client_seed,
    default_train,
    make_client_app,
    partition_id_of,
)
from flower_suite.data.dataset import ArrayDataset
from flower_suite.flower_compat import ClientAppCallable, Mod
from flower_suite.training import TrainConfig, TrainResult
from flower_suite.wire.config import read_float, read_int
from flower_suite.wire.keys import CLIENT_INFO_KEY, N_S_ESTIMATE_KEY
from flower_suite.wire.updates import apply_update, flat_update, mark_attacker

# context.state entries written by attack_context_mod.
_ROUND_KEY = "attack-round"
_ACTIVE_KEY = "attack-active"


# --- The round, carried from the instruction into data_fn / train_fn -------------------------


def reply_partition(reply: Message, context: Context) -> int:
    """The partition a reply reports in ``client-info`` (else the context's)."""
    info = reply.content.config_records.get(CLIENT_INFO_KEY) if reply.has_content() else None
    if info is not None and "partition-id" in info:
        return read_int(info, "partition-id")
    return partition_id_of(context)


def _config(msg: Message) -> ConfigRecord | None:
    return msg.content.config_records.get("config") if msg.has_content() else None


def remember_round(msg: Message, context: Context) -> int | None:
    """Store the instruction's ``server-round`` (and ``n-s-estimate``) in ``context.state``."""
    config = _config(msg)
    stash: dict[str, Any] = {"message-type": msg.metadata.message_type}
    if config is not None:
        for key in ("server-round", N_S_ESTIMATE_KEY):
            if key in config:
                stash[key] = config[key]
    context.state[_ROUND_KEY] = ConfigRecord(stash)
    return int(stash["server-round"]) if "server-round" in stash else None


def current_round(context: Context) -> int | None:
    """The round stored by :func:`attack_context_mod`, or None if unknown."""
    stash = context.state.config_records.get(_ROUND_KEY)
    if stash is None or "server-round" not in stash:
        return None
    return read_int(stash, "server-round")


def _is_training(context: Context) -> bool:
    """False only when the mod recorded a non-train instruction (evaluate, query)."""
    stash = context.state.config_records.get(_ROUND_KEY)
    return stash is None or str(stash.get("message-type", MessageType.TRAIN)) == MessageType.TRAIN


def _n_s_estimate(context: Context) -> float | None:
    stash = context.state.config_records.get(_ROUND_KEY)
    if stash is not None and N_S_ESTIMATE_KEY in stash:
        return read_float(stash, N_S_ESTIMATE_KEY)
    return None


def flag_active(context: Context, attack: str) -> None:
    context.state[_ACTIVE_KEY] = ConfigRecord({"attack": attack})


def is_active(schedule: AttackSchedule, context: Context) -> bool:
    """Whether this node attacks now; a clear error when the round is needed but unknown."""
    partition = partition_id_of(context)
    server_round = current_round(context)
    if server_round is None:
        if isinstance(schedule, FixedPool) and schedule.start_round <= 1:
            return partition in schedule.attacker_partitions
        raise ValueError(
            "this attack schedule depends on the round: add attack_context_mod to the "
            "ClientApp's mods (make_attacker_app does) and send 'server-round' in the config"
        )
    return schedule.is_active(partition, server_round)


def attack_context_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Client mod: record the round for attack wrappers; mark replies of acting attackers."""
    server_round = remember_round(msg, context)
    context.state.config_records.pop(_ACTIVE_KEY, None)
    reply = call_next(msg, context)
    active = context.state.config_records.pop(_ACTIVE_KEY, None)
    is_train = msg.metadata.message_type == MessageType.TRAIN
    if active is not None and is_train and reply.has_content() and not reply.has_error():
        mark_attacker(reply, str(active["attack"]), -1 if server_round is None else server_round)
    return reply


# --- Local Byzantine attacks as a mod ---------------------------------------------------------


def byzantine_mod(
    attack: str | UpdateAttack,
    schedule: AttackSchedule | Iterable[int],
    *,
    seed: int = 0,
    **params: Any,
) -> Mod:
    """A client mod replacing an attacker's trained model by ``global + attack(update)``.

    Parameters
    ----------
    attack : str or UpdateAttack
        A name in :data:`~flower_suite.attacks.byzantine.BYZANTINE_ATTACKS` (built with
        ``params``) or a configured attack. Omniscient attacks are refused.
    schedule : AttackSchedule or iterable of int
        Who attacks when (partition ids mean a fixed pool).
    seed : int
        Seeds random attacks per (round, partition).

    The update is ``reply arrays - received arrays`` over the float arrays, flattened in the
    record's key order; integer buffers keep the trained values. Threat model: local (the
    attacker knows its own update only).
    """
    attack_obj = (
        attack if isinstance(attack, UpdateAttack) else BYZANTINE_ATTACKS.create(attack, **params)
    )
    if attack_obj.needs_honest:
        raise ValueError(
            f"{attack_obj.name} needs the honest updates of the round (omniscient attacker); "
            "use flower_suite.attacks.ByzantineInjector on the server side"
        )
    sched = as_schedule(schedule)

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, context)
        server_round = remember_round(msg, context)
        reply = call_next(msg, context)
        if reply.has_error() or not reply.has_content():
            return reply
        partition = reply_partition(reply, context)
        if server_round is None:
            raise ValueError("byzantine_mod: the train config carries no 'server-round'")
        if not sched.is_active(partition, server_round):
            return reply
        received = msg.content.array_records["arrays"]
        sent = reply.content.array_records["arrays"]
        update, keys = flat_update(sent, received)
        generator = torch.Generator().manual_seed(client_seed(seed, server_round, partition))
        own = torch.from_numpy(update)[None, :]
        malicious = attack_obj(own, None, generator)[0].numpy()
        reply.content["arrays"] = apply_update(received, sent, keys, malicious)
        mark_attacker(reply, attack_obj.name, server_round)
        return reply

    return mod


# --- Data poisoning and PGD -------------------------------------------------------------------


def _resolve_poison(poison: Poison | str | None, params: Mapping[str, Any]) -> Poison | None:
    if isinstance(poison, str):
        return DATA_POISONS.create(poison, **params)
    if params:
        raise ValueError(f"parameters {sorted(params)} need a poison given by name")
    return poison


def poisoned_data_fn(
    data_fn: DataFn,
    attackers: AttackSchedule | Iterable[int],
    poison: Poison | str,
    *,
    seed: int = 0,
    **params: Any,
) -> DataFn:
    """Wrap ``data_fn`` so active attackers get poisoned training data (test data unchanged).

    ``poison`` is a ``(data, seed) -> data`` function or a :data:`DATA_POISONS` name built
    with ``params`` (``"edge_mix"`` with ``edge=..., ratio=...``; ``"label_flip"``). The
    poison is seeded by ``(seed, partition)``, so an attacker's ``D'`` is fixed across
    rounds. Threat model: black-box (the attacker replaces its local data only).
    """
    sched = as_schedule(attackers)
    fn = _resolve_poison(poison, params)
    assert fn is not None

    def wrapped(context: Context) -> ClientData:
        data = data_fn(context)
        # Evaluation uses data.test only: do not poison (nor mark the reply) there.
        if not _is_training(context) or not is_active(sched, context):
            return data
        flag_active(context, "data-poison")
        poisoned = fn(data.train, client_seed(seed, 0, partition_id_of(context)))
        return dataclasses.replace(data, train=poisoned)

    return wrapped


def make_attacker_train_fn(
    schedule: AttackSchedule | Iterable[int],
    *,
    pgd: PGDTrain | None = None,
    poison: Poison | str | None = None,
    base: TrainFn = default_train,
    seed: int = 0,
    **poison_params: Any,
) -> TrainFn:
    """A ``TrainFn`` for the edge-case attackers (spec ``edge-case-backdoors.md`` section 3).

    In active rounds: poison the local data (``poison``, as in :func:`poisoned_data_fn`),
    then train with ``pgd`` (PGD; with model replacement when ``pgd.total_examples`` or the
    config's ``n-s-estimate`` gives ``n_S``) or, without ``pgd``, with ``base`` (black-box:
    honest hyper-parameters). Honest training otherwise. Needs :func:`attack_context_mod`
    when the schedule or the radius decay depends on the round.
    """
    sched = as_schedule(schedule)
    fn = _resolve_poison(poison, poison_params)
    poison_seed = seed  # the train_fn's own `seed` keyword is the batch seed

    def train_fn(
        model: nn.Module,
        data: ArrayDataset,
        config: TrainConfig,
        *,
        seed: int,
        device: torch.device,
        context: Context,
    ) -> TrainResult:
        if not is_active(sched, context):
            return base(model, data, config, seed=seed, device=device, context=context)
        if fn is not None:
            data = fn(data, client_seed(poison_seed, 0, partition_id_of(context)))
        if pgd is None:
            flag_active(context, "black-box")
            return base(model, data, config, seed=seed, device=device, context=context)
        n_s = _n_s_estimate(context)
        attacker = pgd if n_s is None else dataclasses.replace(pgd, total_examples=n_s)
        flag_active(context, "pgd" if attacker.total_examples is None else "pgd-replacement")
        server_round = current_round(context)
        if server_round is None and pgd.radius_decay != 1.0:
            raise ValueError("PGD radius decay needs the round: add attack_context_mod")
        return attacker(
            model, data, config, seed=seed, device=device, server_round=server_round or 0
        )

    return train_fn


def make_attacker_app(
    model_fn: ModelFn,
    data_fn: DataFn,
    schedule: AttackSchedule | Iterable[int],
    *,
    poison: Poison | str | None = None,
    pgd: PGDTrain | None = None,
    byzantine: str | UpdateAttack | None = None,
    mods: Sequence[Mod] = (),
    train_fn: TrainFn = default_train,
    poison_params: Mapping[str, Any] | None = None,
    byzantine_params: Mapping[str, Any] | None = None,
    **app_kwargs: Any,
) -> ClientApp:
    """``make_client_app`` whose ``schedule`` partitions attack; everyone else is honest.

    Examples
    --------
    Black-box edge-case attacker on partition 3 every 10th round::

        app = make_attacker_app(model_fn, data_fn, FixedFrequency([3], every_k=10),
                                poison="edge_mix", poison_params={"edge": edge, "ratio": 0.5})

    PGD with model replacement: ``pgd=PGDTrain(radius=0.036, total_examples=n_S)``; a local
    Byzantine attack: ``byzantine="sign_flip"``.
    """
    seed = int(app_kwargs.get("seed", 0))
    attack_train = train_fn
    if poison is not None or pgd is not None:
        attack_train = make_attacker_train_fn(
            schedule, pgd=pgd, poison=poison, base=train_fn, seed=seed, **(poison_params or {})
        )
    all_mods: list[Mod] = [attack_context_mod, *mods]
    if byzantine is not None:
        all_mods.append(byzantine_mod(byzantine, schedule, seed=seed, **(byzantine_params or {})))
    return make_client_app(model_fn, data_fn, mods=all_mods, train_fn=attack_train, **app_kwargs)


__all__ = [
    "attack_context_mod",
    "byzantine_mod",
    "current_round",
    "make_attacker_app",
    "make_attacker_train_fn",
    "poisoned_data_fn",
]
