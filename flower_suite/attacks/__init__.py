"""Attacks on federated learning: edge-case backdoors, Byzantine updates, schedules.

Framework-free core: :mod:`~flower_suite.attacks.byzantine` (update attacks over ``(n, d)``
tensors and the :data:`BYZANTINE_ATTACKS` registry), :mod:`~flower_suite.attacks.pgd`
(projection, model replacement, the PGD training loop), :mod:`~flower_suite.attacks.edge_case`
(GMM-tail edge sets, the digits "tail 7s as 1" task, the p% split),
:mod:`~flower_suite.attacks.poison` (black-box mix, label flipping) and
:mod:`~flower_suite.attacks.schedule` (fixed-frequency and fixed-pool participation).

Flower adapters: :mod:`~flower_suite.attacks.mods` (client mods, ``data_fn``/``train_fn``
wrappers and :func:`make_attacker_app`) and :mod:`~flower_suite.attacks.injector` (the
omniscient, simulation-side :class:`ByzantineInjector` for ALIE and IPM).
"""

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
from flower_suite.attacks.injector import ByzantineInjector, InjectionRecord
from flower_suite.attacks.mods import (
    ATTACK_INFO_KEY,
    N_S_ESTIMATE_KEY,
    attack_context_mod,
    byzantine_mod,
    make_attacker_app,
    make_attacker_train_fn,
    poisoned_data_fn,
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
    sample_participants,
)

__all__ = [
    "ATTACK_INFO_KEY",
    "BYZANTINE_ATTACKS",
    "DATA_POISONS",
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
    "attack_context_mod",
    "build_edge_case_set",
    "byzantine_mod",
    "constant",
    "decayed_radius",
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
