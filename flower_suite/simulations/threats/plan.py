"""The ``[attack]`` section made concrete: who attacks, and which edge examples each holds.

:func:`plan_threat` decides once, in the driver, everything seeded (attacker partitions,
honest edge holders, the edge-example split) into a picklable :class:`ThreatPlan` that travels
with the task to the Ray actors. :mod:`~flower_suite.simulations.threats.client` and
:mod:`~flower_suite.simulations.threats.server` turn the plan into ClientApp and Grid pieces.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from flower_suite.attacks.digits_edge import digits_edge
from flower_suite.attacks.edge_case import relabel, split_edge_examples
from flower_suite.attacks.poison import mix_sizes
from flower_suite.attacks.schedule import FixedFrequency, FixedPool
from flower_suite.data.dataset import ArrayDataset
from flower_suite.simulations.config import AttackConfig, ConfigError, ExperimentConfig

__all__ = ["EdgeSets", "PlanInputs", "ThreatPlan", "load_edge_sets", "plan_threat"]


class PlanInputs(Protocol):
    """What :func:`plan_threat` reads of an experiment (``ExperimentTask`` provides it)."""

    @property
    def config(self) -> ExperimentConfig: ...

    def data(self) -> tuple[ArrayDataset, ArrayDataset]: ...

    def partitions(self) -> tuple[np.ndarray, ...]: ...


@dataclass(frozen=True)
class EdgeSets:
    """Edge-case examples: training examples (target-labelled), held-out test examples
    (target-labelled) and the inputs' true class (for honest holders)."""

    train: ArrayDataset
    test: ArrayDataset
    source_label: int


def load_edge_sets(attack: AttackConfig, seed: int) -> EdgeSets:
    """The built-in digits edge set, or a user's ``.npz`` with arrays ``train_x``, ``train_y``,
    ``test_x``, ``test_y`` (labels = the attacker's target) and optionally ``source_label``."""
    if attack.edge_set == "digits":
        edge = digits_edge(seed)
        return EdgeSets(edge.edge_train, edge.edge_test, edge.source_class)
    try:
        with np.load(attack.edge_set) as arrays:
            data = {k: arrays[k] for k in arrays.files}
        num_classes = int(max(data["train_y"].max(), data["test_y"].max())) + 1
        source = int(data["source_label"]) if "source_label" in data else attack.source_label
        sets = [
            ArrayDataset(
                x=data[f"{part}_x"].astype(np.float32),
                y=data[f"{part}_y"].astype(np.int64),
                num_classes=num_classes,
                name=f"edge-{part}",
            )
            for part in ("train", "test")
        ]
    except (KeyError, OSError, ValueError) as err:
        raise ConfigError(f"attack.edge_set: cannot read {attack.edge_set}: {err}") from err
    return EdgeSets(sets[0], sets[1], source)


def _with_classes(data: ArrayDataset, num_classes: int) -> ArrayDataset:
    """``data`` claiming ``num_classes`` classes (a user's edge set may not use them all)."""
    if data.num_classes == num_classes:
        return data
    return ArrayDataset(x=data.x, y=data.y, num_classes=num_classes, name=data.name)


@dataclass(frozen=True)
class ThreatPlan:
    """Everything seeded about the attack, decided once in the driver (picklable)."""

    attack: AttackConfig
    attackers: tuple[int, ...]
    schedule: FixedFrequency | FixedPool
    honest_holders: tuple[int, ...] = ()
    attacker_edge: ArrayDataset | None = None  # target-labelled edge examples of attackers
    honest_edge: Mapping[int, ArrayDataset] = field(default_factory=dict)  # true labels
    edge_test: ArrayDataset | None = None  # target-labelled held-out edge examples
    source_label: int = -1
    n_s_estimate: float = 0.0

    @property
    def omniscient(self) -> bool:
        return self.attack.is_omniscient


def _mix_clean_needed(attack: AttackConfig) -> int:
    """Clean examples an attacker's partition must hold for its poisoned mix ``D'``."""
    if attack.mix_size:
        return attack.mix_size - round(attack.mix_ratio * attack.mix_size)
    if attack.mix_ratio >= 1:
        return 0
    return 1


def plan_threat(task: PlanInputs) -> ThreatPlan:
    """Decide attackers, holders and the edge split for ``task`` (``ConfigError`` if it
    cannot work with this data, e.g. an attacker partition too small for its mix)."""
    config, attack = task.config, task.config.attack
    sizes = [len(part) for part in task.partitions()]
    train, test = task.data()
    rng = np.random.default_rng([config.seed, 0xA77AC])
    edge = load_edge_sets(attack, config.seed) if attack.is_edge else None
    needed = _mix_clean_needed(attack) if edge is not None else 1
    attackers = attack.attackers
    if not attackers and attack.num_attackers:
        # Attackers are ordinary clients drawn with the seed among those whose data can
        # make their poisoned mix (empty Dirichlet clients cannot attack).
        eligible = [p for p in range(config.num_clients) if sizes[p % len(sizes)] >= needed]
        if len(eligible) < attack.num_attackers:
            raise ConfigError(
                f"attack.num_attackers: only {len(eligible)} partitions hold the {needed} "
                "clean examples an attacker's mix needs"
            )
        attackers = tuple(sorted(rng.choice(eligible, attack.num_attackers, replace=False)))
    attackers = tuple(int(p) for p in attackers)
    for p in attackers:
        if sizes[p % len(sizes)] < needed:
            raise ConfigError(
                f"attack.attackers: partition {p} holds {sizes[p % len(sizes)]} examples; "
                f"the attacker's mix needs {needed} clean ones (lower attack.mix_size)"
            )
    if attack.pattern == "fixed_pool":
        schedule: FixedFrequency | FixedPool = FixedPool(attackers, attack.start_round)
    else:
        schedule = FixedFrequency(attackers, attack.every_k, attack.start_round)
    plan = ThreatPlan(attack=attack, attackers=attackers, schedule=schedule)
    if edge is None:
        return plan
    return _plan_edge(task, plan, edge, rng, train.num_classes, len(test))


def _plan_edge(
    task: PlanInputs,
    plan: ThreatPlan,
    edge: EdgeSets,
    rng: np.random.Generator,
    num_classes: int,
    num_test: int,
) -> ThreatPlan:
    config, attack = task.config, plan.attack
    edge_train = _with_classes(edge.train, num_classes)
    holders = attack.honest_holders
    count = attack.num_honest_holders if attack.attacker_fraction < 1 else 0
    if not holders and count:
        honest = [p for p in range(config.num_clients) if p not in plan.attackers]
        holders = tuple(int(p) for p in rng.permutation(honest)[:count])
    if attack.attacker_fraction < 1 and edge.source_label < 0:
        raise ConfigError(
            "attack.source_label: honest edge holders need the edge inputs' true class"
        )
    if attack.attacker_fraction == 0:
        if plan.attackers:
            raise ConfigError("attack.attacker_fraction: 0 leaves the attackers no edge examples")
        attacker_edge = None
        honest_set = relabel(edge_train, edge.source_label)
        order = rng.permutation(len(honest_set))
        chunks = np.array_split(order, len(holders))
        honest_parts = tuple(honest_set.subset(chunk) for chunk in chunks)
    elif holders:
        split = split_edge_examples(
            edge_train,
            attack.attacker_fraction,
            len(holders),
            config.seed,
            honest_label=edge.source_label,
        )
        attacker_edge, honest_parts = split.attacker, split.honest
    else:
        attacker_edge, honest_parts = edge_train, ()
    if attacker_edge is not None and plan.attackers:
        try:  # fail now, not in the first attack round
            mix_sizes(10**9, len(attacker_edge), attack.mix_ratio, attack.mix_size or None)
        except ValueError as err:
            raise ConfigError(f"attack.mix_size: {err}") from err
    # Model replacement's n_S: m x mean client size (spec pitfall 7) unless configured.
    mean_size = float(np.mean([len(p) for p in task.partitions()]))
    n_s = attack.n_s_estimate or config.sampled_clients * mean_size
    return dataclasses.replace(
        plan,
        honest_holders=tuple(holders),
        attacker_edge=attacker_edge,
        honest_edge=dict(zip(holders, honest_parts, strict=True)),
        edge_test=_with_classes(edge.test, num_classes),
        source_label=edge.source_label,
        n_s_estimate=n_s,
    )
