"""The client side of an attack run: the ClientApp pieces a :class:`ThreatPlan` asks for.

:func:`client_threat` gives the attacker behaviour of the ClientApp: a ``TrainFn`` (edge data
mix, PGD, model replacement, label flipping), client mods (local Byzantine attacks, the round
tracker) and a ``data_fn`` wrapper giving honest edge holders their correctly labelled edge
examples. Partitions that are not active attackers train honestly. The pieces themselves are
the Flower adapters of :mod:`flower_suite.clients.attacker`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Context

from flower_suite.attacks.byzantine import BYZANTINE_ATTACKS, COLLUDING
from flower_suite.attacks.pgd import PGDTrain
from flower_suite.attacks.poison import mix_poison
from flower_suite.clients.attacker import attack_context_mod, byzantine_mod, make_attacker_train_fn
from flower_suite.clients.client_app import (
    ClientData,
    DataFn,
    TrainFn,
    default_train,
    partition_id_of,
)
from flower_suite.clients.colluding import make_colluding_train_fn
from flower_suite.data.dataset import ArrayDataset
from flower_suite.flower_compat import Mod
from flower_suite.simulations.config.attack import label_mapping
from flower_suite.simulations.threats.plan import ThreatPlan
from flower_suite.wire.keys import N_S_ESTIMATE_KEY

__all__ = ["ClientThreat", "client_threat", "train_config_extras"]


@dataclass
class ClientThreat:
    """What the simulation ClientApp adds for an attack."""

    train_fn: TrainFn = default_train
    mods: list[Mod] = field(default_factory=list)
    wrap_data_fn: Callable[[DataFn], DataFn] = lambda fn: fn


def _concat(a: ArrayDataset, b: ArrayDataset) -> ArrayDataset:
    return ArrayDataset(
        x=np.concatenate([a.x, b.x.astype(a.x.dtype)]),
        y=np.concatenate([a.y, b.y]),
        num_classes=a.num_classes,
        name=a.name,
    )


def _holders_data_fn(plan: ThreatPlan) -> Callable[[DataFn], DataFn]:
    """Honest edge holders train on their partition plus their correctly labelled edge part."""
    if not plan.honest_edge:
        return lambda fn: fn

    def wrap(data_fn: DataFn) -> DataFn:
        def wrapped(context: Context) -> ClientData:
            data = data_fn(context)
            extra = plan.honest_edge.get(partition_id_of(context))
            if extra is None:
                return data
            return dataclasses.replace(data, train=_concat(data.train, extra))

        return wrapped

    return wrap


def client_threat(plan: ThreatPlan, seed: int, data_fn: DataFn | None = None) -> ClientThreat:
    """Attacker pieces of the ClientApp for ``plan`` (``seed`` fixes each attacker's ``D'``;
    ``data_fn`` lets colluding attackers load their colluders' partitions)."""
    attack = plan.attack
    out = ClientThreat(wrap_data_fn=_holders_data_fn(plan))
    if attack.is_edge:
        if not plan.attackers or plan.attacker_edge is None:
            return out  # only honest edge holders (e.g. the fairness check)
        edge, ratio, size = plan.attacker_edge, attack.mix_ratio, attack.mix_size or None

        def poison(data: ArrayDataset, poison_seed: int) -> ArrayDataset:
            return mix_poison(data, edge, ratio, poison_seed, size=size)

        pgd = None
        if attack.name != "edge_blackbox":
            pgd = PGDTrain(
                radius=attack.pgd_radius,
                project_every=attack.project_every,
                radius_decay=attack.radius_decay,
                lr=attack.params.get("lr"),
            )
        out.train_fn = make_attacker_train_fn(plan.schedule, pgd=pgd, poison=poison, seed=seed)
        out.mods = [attack_context_mod]
    elif attack.name == "label_flip":
        params = dict(attack.params)
        if "mapping" in params:
            params["mapping"] = label_mapping(params["mapping"])
        out.train_fn = make_attacker_train_fn(
            plan.schedule, poison="label_flip", seed=seed, **params
        )
        out.mods = [attack_context_mod]
    elif attack.name in BYZANTINE_ATTACKS and not plan.omniscient:
        update_attack = BYZANTINE_ATTACKS.create(attack.name, **attack.params)
        if update_attack.threat_model == COLLUDING:  # ALIE from the colluders' own updates
            if data_fn is None:
                raise ValueError(f"{attack.name}: a colluding attack needs the ClientApp's data_fn")
            out.train_fn = make_colluding_train_fn(
                update_attack, plan.schedule, plan.attackers, data_fn, seed=seed
            )
            out.mods = [attack_context_mod]
            return out
        out.mods = [
            attack_context_mod,
            byzantine_mod(update_attack, plan.schedule, seed=seed),
        ]
    # Omniscient attacks (ALIE, IPM): clients stay honest; the server-side injector rewrites.
    return out


def train_config_extras(plan: ThreatPlan | None) -> dict[str, float]:
    """Keys added to every train config: ``n-s-estimate`` for model replacement."""
    if plan is None or plan.attack.name != "edge_pgd_replacement":
        return {}
    return {N_S_ESTIMATE_KEY: float(plan.n_s_estimate)}
