"""The ``[attack]`` section made runnable: who attacks, their data, their ClientApp pieces.

:func:`plan_threat` decides once, in the driver, everything seeded (attacker partitions,
honest edge holders, the edge-example split) into a picklable :class:`ThreatPlan` that travels
with the task to the Ray actors. From it:

- :func:`client_threat` gives the attacker behaviour of the ClientApp: a ``TrainFn`` (edge
  data mix, PGD, model replacement, label flipping), client mods (local Byzantine attacks,
  the round tracker) and a ``data_fn`` wrapper giving honest edge holders their correctly
  labelled edge examples. Partitions that are not active attackers train honestly.
- :func:`server_threat` wraps the server's Grid (:class:`flower_suite.simulations.attack_grid.
  AttackGrid`) to force fixed-frequency participation, inject omniscient attacks (ALIE, IPM)
  through :class:`~flower_suite.attacks.ByzantineInjector` and measure update norms.

A run without ``[attack]`` never reaches this module's code paths.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from flower_suite.attacks import (
    BYZANTINE_ATTACKS,
    DigitsEdgeCase,
    FixedFrequency,
    FixedPool,
    PGDTrain,
    attack_context_mod,
    byzantine_mod,
    digits_edge_case,
    make_attacker_train_fn,
    mix_poison,
    relabel,
    split_edge_examples,
)
from flower_suite.attacks.poison import mix_sizes
from flower_suite.clients.client_app import (
    ClientData,
    DataFn,
    TrainFn,
    default_train,
    partition_id_of,
)
from flower_suite.data.dataset import ArrayDataset
from flower_suite.simulations.attack_config import AttackConfig, label_mapping
from flower_suite.simulations.config import ConfigError

if TYPE_CHECKING:
    from flwr.clientapp.typing import Mod

    from flower_suite.simulations.task import ExperimentTask


@functools.lru_cache(maxsize=4)
def digits_edge(seed: int) -> DigitsEdgeCase:
    """The built-in digits edge-case task for ``seed`` (spec section 9), once per process."""
    return digits_edge_case(seed)


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


def plan_threat(task: ExperimentTask) -> ThreatPlan:
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
    task: ExperimentTask,
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


# --- client side --------------------------------------------------------------------------


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
        def wrapped(context: Any) -> ClientData:
            data = data_fn(context)
            extra = plan.honest_edge.get(partition_id_of(context))
            if extra is None:
                return data
            return dataclasses.replace(data, train=_concat(data.train, extra))

        return wrapped

    return wrap


def client_threat(plan: ThreatPlan, seed: int) -> ClientThreat:
    """Attacker pieces of the ClientApp for ``plan`` (``seed`` fixes each attacker's ``D'``)."""
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
        out.mods = [
            attack_context_mod,
            byzantine_mod(attack.name, plan.schedule, seed=seed, **attack.params),
        ]
    # Omniscient attacks (ALIE, IPM): clients stay honest; the server-side injector rewrites.
    return out


def train_config_extras(plan: ThreatPlan | None) -> dict[str, float]:
    """Keys added to every train config: ``n-s-estimate`` for model replacement."""
    if plan is None or plan.attack.name != "edge_pgd_replacement":
        return {}
    from flower_suite.attacks import N_S_ESTIMATE_KEY

    return {N_S_ESTIMATE_KEY: float(plan.n_s_estimate)}


# --- server side ----------------------------------------------------------------------------


@dataclass
class ServerThreat:
    """The server's view of an attack run: the plan, the grid the strategy talks to (an
    :class:`AttackGrid`) and, for omniscient attacks, the injector below it."""

    plan: ThreatPlan
    grid: Any  # AttackGrid
    injector: Any = None  # ByzantineInjector | None


def server_threat(plan: ThreatPlan, metered: Any, config: Any) -> ServerThreat:
    """Wrap the runner's ``MeteredGrid``: strategy -> AttackGrid -> [injector] -> metered."""
    from flower_suite.attacks import ByzantineInjector
    from flower_suite.simulations.attack_grid import AttackGrid

    inner, injector = metered, None
    if plan.omniscient:
        injector = ByzantineInjector(
            metered, plan.attack.name, plan.schedule, seed=config.seed, **plan.attack.params
        )
        inner = injector
    forced = plan.schedule if isinstance(plan.schedule, FixedFrequency) else None
    grid = AttackGrid(
        inner,
        metered.partitions,  # the same dict, filled as nodes report their partitions
        forced,
        num_partitions=config.num_clients,
        clients_per_round=config.sampled_clients,
        seed=config.seed,
    )
    return ServerThreat(plan=plan, grid=grid, injector=injector)
