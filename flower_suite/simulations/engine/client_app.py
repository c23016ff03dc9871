"""The ClientApp of every simulated experiment, on Ray, in process and under ``flwr run``.

:func:`simulation_client_app` builds the torch ClientApp of an :class:`ExperimentTask`:
partition from ``partition-id``, model and hyper-parameters from the config, the attacker
pieces of an ``[attack]`` plan, ``secagg_mod`` under ``[secagg]`` and FedMA's handlers
otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

from flwr.app import Context
from flwr.clientapp import ClientApp
from torch import nn

from flower_suite.attacks.byzantine import BYZANTINE_ATTACKS, UpdateAttack
from flower_suite.clients.client_app import (
    ClientData,
    DataFn,
    TrainFn,
    default_train,
    make_client_app,
    partition_id_of,
    set_torch_threads,
)
from flower_suite.clients.compression_mod import make_compression_mod
from flower_suite.clients.draco_client import add_draco_handlers
from flower_suite.clients.fedma_client import add_fedma_handlers
from flower_suite.clients.secagg_mod import secagg_mod
from flower_suite.flower_compat import Mod
from flower_suite.simulations.engine.task import ExperimentTask
from flower_suite.simulations.threats import client_threat

__all__ = ["simulation_client_app"]


def simulation_client_app(
    task: ExperimentTask, mods: Sequence[Mod] = (), base_data_fn: DataFn | None = None
) -> ClientApp:
    """The torch ClientApp for ``task``: partition from ``partition-id``, model from config.

    ``mods`` wrap every client (attacks, compression, secure aggregation, ...). With an
    ``[attack]`` section the task's attack plan adds the attacker pieces
    (``threats.client_threat``): only the attacker partitions act on them.
    """
    threads = max(1, int(task.config.resources.num_cpus))

    def model_fn(context: Context) -> nn.Module:
        set_torch_threads(threads)
        return task.build_model()

    def partition_data(context: Context) -> ClientData:
        return task.client_data(partition_id_of(context))

    # The `flwr run` app passes its own, which checks the federation size first.
    data_fn: DataFn = partition_data if base_data_fn is None else base_data_fn

    # A client given no GPU share trains on the CPU even where GPUs are visible.
    device = "cpu" if task.config.resources.num_gpus == 0 else None
    train_fn: TrainFn = default_train
    plan = task.threat_plan()
    threat_mods: list[Mod] = []
    if plan is not None:  # [attack]: attacker partitions attack, the others stay honest
        threat = client_threat(plan, task.config.seed, data_fn)
        data_fn = threat.wrap_data_fn(data_fn)
        threat_mods = threat.mods
        train_fn = threat.train_fn
    if task.config.secagg_enabled:  # [secagg]: every client masks its update, an attacker
        mods = [*mods, secagg_mod, *threat_mods]  # its poisoned one (the attack acts first)
    else:
        mods = [*threat_mods, *mods]
    compression = task.config.compression
    if compression.enabled:  # [compression]: outermost, so it sends what the others made
        codec_mod = make_compression_mod(
            compression.build(), task.config.seed, error_feedback=compression.error_feedback
        )
        mods = [codec_mod, *mods]
    app = make_client_app(
        model_fn,
        data_fn,
        defaults=task.train_config,
        seed=task.config.seed,
        device=device,
        mods=mods,
        train_fn=train_fn,
    )
    # FedMA's layer-wise steps arrive as `train.fedma` / `evaluate.fedma` messages; the
    # handlers answer only those, so every app can carry them, except a secure one: a FedMA
    # reply is a trained layer in clear (secagg_mod refuses such messages as well).
    if not task.config.secagg_enabled:
        add_fedma_handlers(
            app, model_fn, data_fn, defaults=task.train_config, seed=task.config.seed, device=device
        )
    # DRACO's coded replies answer `train.draco` messages only; a local Byzantine attack of the
    # [attack] plan replaces an active attacker's coded message.
    draco_attack: UpdateAttack | None = None
    if plan is not None and plan.attack.name in BYZANTINE_ATTACKS and not plan.omniscient:
        draco_attack = BYZANTINE_ATTACKS.create(plan.attack.name, **plan.attack.params)
    add_draco_handlers(
        app,
        model_fn,
        data_fn,
        defaults=task.train_config,
        seed=task.config.seed,
        device=device,
        attack=draco_attack,
        schedule=plan.schedule if draco_attack is not None and plan is not None else None,
    )
    return app
