"""The ``[attack]`` section of an experiment config: who attacks, how and when.

``name = ""`` (the default) means no attack: the run is exactly the run without an ``[attack]``
table. Example (the spec's digits edge-case benchmark, ``experiments/digits_edge.toml``)::

    [data]
    dataset = "digits_edge"      # digits without the edge-case images
    [attack]
    name = "edge_blackbox"       # or edge_pgd, edge_pgd_replacement, alie, ipm, sign_flip, ...
    num_attackers = 1            # or attackers = [3]
    pattern = "fixed_frequency"  # the attacker joins every `every_k` rounds from `start_round`
    every_k = 1
    start_round = 21             # 20 clean warm-up rounds
    edge_set = "digits"          # built-in "tail 7s labelled 1"; or a path to an .npz file
    mix_ratio = 0.5
    mix_size = 80                # D' = 40 edge + 40 clean

Errors are ``ConfigError``s naming the field (``attack.every_k: must be >= 1, not 0``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flower_suite.attacks.byzantine import BYZANTINE_ATTACKS
from flower_suite.attacks.digits_edge import DIGITS_EDGE_DATASET
from flower_suite.attacks.poison import DATA_POISONS
from flower_suite.registry import Registry, RegistryError
from flower_suite.simulations.config.errors import ConfigError

__all__ = ["EDGE_ATTACKS", "PATTERNS", "AttackConfig", "label_mapping", "validate_attack"]

# Edge-case backdoors (Wang et al., NeurIPS 2020): the black-box data mix, PGD, and PGD
# with model replacement (the server's n_S estimate travels as `n-s-estimate`).
EDGE_ATTACKS = ("edge_blackbox", "edge_pgd", "edge_pgd_replacement")
PATTERNS = ("fixed_frequency", "fixed_pool")
# Extra keyword arguments (`attack.params`) the edge attacks accept: the PGD attacker's own
# learning rate (white-box; the honest one otherwise).
_EDGE_PARAMS = {"edge_blackbox": (), "edge_pgd": ("lr",), "edge_pgd_replacement": ("lr",)}


def _int_tuple(value: Any, where: str) -> tuple[int, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise ConfigError(f"{where}: expected a list of partition ids, got {value!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"{where}: expected a list of partition ids, got {value!r}")
    return tuple(int(v) for v in value)


@dataclass(frozen=True)
class AttackConfig:
    """Attack settings; every field has a default, ``name = ""`` disables the attack."""

    name: str = ""
    attackers: tuple[int, ...] = ()  # partition ids; empty: `num_attackers` drawn with the seed
    num_attackers: int = 1
    pattern: str = "fixed_frequency"
    every_k: int = 1  # fixed frequency: attack rounds start_round, start_round + every_k, ...
    start_round: int = 1  # first round an attacker acts (after warm-up rounds)
    edge_set: str = "digits"  # "digits" (needs data.dataset = "digits_edge") or an .npz path
    attacker_fraction: float = 1.0  # p: share of the edge-train examples the attackers hold
    num_honest_holders: int = 0  # honest clients given the other (correctly labelled) ones
    honest_holders: tuple[int, ...] = ()  # explicit honest holder partitions
    source_label: int = -1  # the edge inputs' true class (.npz sets without `source_label`)
    mix_ratio: float = 0.5  # |D'_edge| / |D'| of the attacker's poisoned data
    mix_size: int = 0  # |D'|; 0 = the largest mix the attacker's data allows
    pgd_radius: float = 0.3  # delta_0 of PGD (spec: 0.3; 0.036 with model replacement)
    radius_decay: float = 0.998  # delta_t = delta_0 * radius_decay ** t
    project_every: int = 10
    n_s_estimate: float = 0.0  # n_S for model replacement; 0 = m x mean client size
    params: Mapping[str, Any] = field(default_factory=dict)  # extra attack keywords

    def __post_init__(self) -> None:
        object.__setattr__(self, "attackers", _int_tuple(self.attackers, "attack.attackers"))
        object.__setattr__(
            self, "honest_holders", _int_tuple(self.honest_holders, "attack.honest_holders")
        )
        if not isinstance(self.params, Mapping):
            raise ConfigError(f"attack.params: expected a table, got {self.params!r}")
        object.__setattr__(self, "params", dict(self.params))

    @property
    def enabled(self) -> bool:
        return bool(self.name)

    @property
    def is_edge(self) -> bool:
        return self.name in EDGE_ATTACKS

    @property
    def is_omniscient(self) -> bool:
        """ALIE/IPM: need every honest update, so they run in the server-side injector."""
        if self.name not in BYZANTINE_ATTACKS or self.is_edge:
            return False
        return BYZANTINE_ATTACKS.create(self.name, **self.params).needs_honest


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _check_name(attack: AttackConfig) -> None:
    name = attack.name
    if attack.is_edge:
        allowed = _EDGE_PARAMS[name]
        for key in attack.params:
            _check(key in allowed, f"attack.params.{key}: {name} accepts {list(allowed)}")
        return
    if name in DATA_POISONS and name != "edge_mix":
        registry: Registry[Any] = DATA_POISONS
    elif name in BYZANTINE_ATTACKS:
        registry = BYZANTINE_ATTACKS
    else:
        known = [*EDGE_ATTACKS, *sorted(BYZANTINE_ATTACKS)]
        known += [p for p in sorted(DATA_POISONS) if p != "edge_mix"]
        raise ConfigError(f"attack.name: unknown attack {name!r} (known: {', '.join(known)})")
    params = dict(attack.params)
    if name == "label_flip" and "mapping" in params:
        params["mapping"] = label_mapping(params["mapping"])
    try:
        registry.check_kwargs(name, params, field="attack.params")
        registry.create(name, **params)
    except RegistryError as err:
        raise ConfigError(str(err)) from err
    except (TypeError, ValueError) as err:
        raise ConfigError(f"attack.params: {err}") from err


def label_mapping(raw: Any) -> dict[int, int]:
    """TOML tables have string keys: ``{"7" = 1}`` -> ``{7: 1}``."""
    try:
        return {int(k): int(v) for k, v in dict(raw).items()}
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"attack.params.mapping: expected a table of label -> label: {err}"
        ) from err


def validate_attack(
    attack: AttackConfig,
    *,
    num_clients: int,
    sampled_clients: int,
    rounds: int,
    strategy: str,
    dataset: str,
) -> None:
    """Value and cross-field checks of ``attack`` (nothing when disabled), given what it
    depends on: the client counts ``K`` and ``m``, the rounds, the strategy and data set names.
    """
    if not attack.enabled:
        return
    _check_name(attack)
    n, m = num_clients, sampled_clients
    _check(attack.pattern in PATTERNS, f"attack.pattern: must be one of {PATTERNS}")
    _check(attack.every_k >= 1, f"attack.every_k: must be >= 1, not {attack.every_k}")
    _check(
        1 <= attack.start_round <= rounds,
        f"attack.start_round: must be in [1, rounds={rounds}], not {attack.start_round}",
    )
    for where, ids in (("attackers", attack.attackers), ("honest_holders", attack.honest_holders)):
        bad = [p for p in ids if not 0 <= p < n]
        _check(not bad, f"attack.{where}: partition ids {bad} outside [0, num_clients={n})")
        _check(len(set(ids)) == len(ids), f"attack.{where}: repeated partition ids {list(ids)}")
    if not attack.attackers:
        _check(
            0 <= attack.num_attackers < n,
            f"attack.num_attackers: must be in [0, num_clients={n}), not {attack.num_attackers}",
        )
    count = len(attack.attackers) or attack.num_attackers
    if attack.pattern == "fixed_frequency":
        _check(
            count <= m,
            f"attack.num_attackers: {count} attackers cannot all join a round of "
            f"clients_per_round={m} (fixed_frequency adds every attacker to its rounds)",
        )
        if m < n and strategy.strip().lower() == "detox":
            raise ConfigError(
                "attack.pattern: fixed_frequency re-targets the round's sample, which DETOX's "
                "fixed node groups do not allow; use fixed_pool or clients_per_round = 0"
            )
    if attack.is_omniscient:
        _check(count >= 1, "attack.num_attackers: an omniscient attack needs >= 1 attacker")
    both = set(attack.attackers) & set(attack.honest_holders)
    _check(not both, f"attack.honest_holders: {sorted(both)} are also attackers")
    if attack.is_edge:
        _validate_edge(attack, num_clients=n, dataset=dataset)


def _validate_edge(attack: AttackConfig, *, num_clients: int, dataset: str) -> None:
    _check(
        0 <= attack.attacker_fraction <= 1 and not math.isnan(attack.attacker_fraction),
        f"attack.attacker_fraction: must be in [0, 1], not {attack.attacker_fraction}",
    )
    holders = len(attack.honest_holders) or attack.num_honest_holders
    _check(
        attack.num_honest_holders >= 0,
        f"attack.num_honest_holders: must be >= 0, not {attack.num_honest_holders}",
    )
    if attack.attacker_fraction < 1:
        _check(
            holders >= 1,
            "attack.num_honest_holders: attacker_fraction < 1 leaves edge examples to honest "
            "clients; set num_honest_holders >= 1 (or honest_holders)",
        )
    else:
        _check(
            holders == 0,
            "attack.honest_holders: attacker_fraction = 1 leaves no edge examples to honest "
            "clients; lower attacker_fraction or drop the holders",
        )
    count = len(attack.attackers) or attack.num_attackers
    _check(
        holders + count <= num_clients,
        f"attack.num_honest_holders: {holders} holders + {count} attackers exceed "
        f"num_clients={num_clients}",
    )
    _check(
        0 <= attack.mix_ratio <= 1, f"attack.mix_ratio: must be in [0, 1], not {attack.mix_ratio}"
    )
    _check(attack.mix_size >= 0, f"attack.mix_size: must be >= 0, not {attack.mix_size}")
    _check(
        math.isfinite(attack.pgd_radius) and attack.pgd_radius > 0,
        f"attack.pgd_radius: must be > 0, not {attack.pgd_radius}",
    )
    _check(
        0 < attack.radius_decay <= 1,
        f"attack.radius_decay: must be in (0, 1], not {attack.radius_decay}",
    )
    _check(
        attack.project_every >= 1,
        f"attack.project_every: must be >= 1, not {attack.project_every}",
    )
    _check(
        attack.n_s_estimate >= 0, f"attack.n_s_estimate: must be >= 0, not {attack.n_s_estimate}"
    )
    if attack.edge_set == "digits":
        _check(
            dataset == DIGITS_EDGE_DATASET,
            f"attack.edge_set: the built-in 'digits' edge set needs data.dataset = "
            f"'{DIGITS_EDGE_DATASET}' (digits without the edge images), not "
            f"{dataset!r}",
        )
    else:
        path = Path(attack.edge_set)
        _check(
            path.suffix == ".npz" and path.is_file(),
            f"attack.edge_set: 'digits' or an existing .npz file, not {attack.edge_set!r}",
        )
