"""Attacks on federated learning: edge-case backdoors, Byzantine updates, schedules.

Framework-free core: :mod:`~flower_suite.attacks.byzantine` (update attacks over ``(n, d)``
tensors and the :data:`BYZANTINE_ATTACKS` registry), :mod:`~flower_suite.attacks.pgd`
(projection, model replacement, the PGD training loop), :mod:`~flower_suite.attacks.edge_case`
(GMM-tail edge sets, the digits "tail 7s as 1" task, the p% split),
:mod:`~flower_suite.attacks.poison` (black-box mix, label flipping) and
:mod:`~flower_suite.attacks.schedule` (fixed-frequency and fixed-pool participation).

Importing this package registers the ``digits_edge`` data set
(:mod:`~flower_suite.attacks.digits_edge`) and loads no Flower module.

The Flower adapters live with the other adapters: :mod:`flower_suite.clients.attacker` (client
mods, ``data_fn``/``train_fn`` wrappers and ``make_attacker_app``) and
:mod:`flower_suite.byzantine_injector` (the omniscient, simulation-side ``ByzantineInjector``
for ALIE and IPM). Their names stay importable from here (``from flower_suite.attacks import
byzantine_mod``): they are resolved on first use, so ``import flower_suite.attacks.pgd`` never
loads Flower.
"""

from __future__ import annotations

import importlib
from typing import Any

from flower_suite.attacks.byzantine import (
    BYZANTINE_ATTACKS,
    UpdateAttack,
    alie,
    alie_z,
    constant,
    gaussian_noise,
    ipm,
    reverse_gradient,
    sign_flip,
)
from flower_suite.attacks.digits_edge import DIGITS_EDGE_DATASET, digits_edge
from flower_suite.attacks.edge_case import (
    DigitsEdgeCase,
    EdgeSelection,
    EdgeSplit,
    build_edge_case_set,
    digits_edge_case,
    fit_class_gmm,
    gmm_tail_scores,
    model_logits,
    relabel,
    roll_augment,
    select_tail,
    split_edge_examples,
)
from flower_suite.attacks.pgd import (
    PGDTrain,
    decayed_radius,
    l2_distance,
    model_replacement,
    pgd_train,
    project_l2_ball,
    replacement_scale,
)
from flower_suite.attacks.poison import DATA_POISONS, flip_labels, mix_poison, mix_sizes
from flower_suite.attacks.schedule import (
    AttackSchedule,
    FixedFrequency,
    FixedPool,
    as_schedule,
    sample_participants,
)
from flower_suite.wire.keys import ATTACK_INFO_KEY, N_S_ESTIMATE_KEY

# Flower adapters re-exported for compatibility: name -> the module that defines it, imported
# on first access (PEP 562), so that importing the framework-free core never loads Flower.
_ADAPTERS = {
    "ByzantineInjector": "flower_suite.byzantine_injector",
    "InjectionRecord": "flower_suite.byzantine_injector",
    "attack_context_mod": "flower_suite.clients.attacker",
    "byzantine_mod": "flower_suite.clients.attacker",
    "make_attacker_app": "flower_suite.clients.attacker",
    "make_attacker_train_fn": "flower_suite.clients.attacker",
    "poisoned_data_fn": "flower_suite.clients.attacker",
}


def __getattr__(name: str) -> Any:
    module = _ADAPTERS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_ADAPTERS])


__all__ = [
    "ATTACK_INFO_KEY",
    "BYZANTINE_ATTACKS",
    "DATA_POISONS",
    "DIGITS_EDGE_DATASET",
    "N_S_ESTIMATE_KEY",
    "AttackSchedule",
    "ByzantineInjector",
    "DigitsEdgeCase",
    "EdgeSelection",
    "EdgeSplit",
    "FixedFrequency",
    "FixedPool",
    "InjectionRecord",
    "PGDTrain",
    "UpdateAttack",
    "alie",
    "alie_z",
    "as_schedule",
    "attack_context_mod",
    "build_edge_case_set",
    "byzantine_mod",
    "constant",
    "decayed_radius",
    "digits_edge",
    "digits_edge_case",
    "fit_class_gmm",
    "flip_labels",
    "gaussian_noise",
    "gmm_tail_scores",
    "ipm",
    "l2_distance",
    "make_attacker_app",
    "make_attacker_train_fn",
    "mix_poison",
    "mix_sizes",
    "model_logits",
    "model_replacement",
    "pgd_train",
    "poisoned_data_fn",
    "project_l2_ball",
    "relabel",
    "replacement_scale",
    "reverse_gradient",
    "roll_augment",
    "sample_participants",
    "select_tail",
    "sign_flip",
    "split_edge_examples",
]
