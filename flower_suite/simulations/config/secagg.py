"""The ``[secagg]`` section: secure aggregation for any experiment with a FedAvg-family rule.

An empty table (the default) means plain aggregation. Any keyword of
:class:`~flower_suite.strategies.secagg.SecAggPlus` may appear, e.g.::

    [secagg]
    num_shares = 5                # SecAgg+ neighbours (incl. self); >= num_clients = SecAgg
    reconstruction_threshold = 3
    clipping_range = 8.0

With ``group_size = g`` the engine runs group-wise secure aggregation instead
(:class:`~flower_suite.strategies.secure_robust.SecureRobust`): the sampled clients form
random groups of at least ``g`` (seeded by the experiment's ``seed``), each group runs SecAgg+,
and the configured strategy, robust rules included, aggregates the group means::

    [strategy]
    name = "median"
    [secagg]
    group_size = 4                # the server sees means of >= 4 clients

The engine then wraps the configured strategy in ``SecAggPlus`` (or ``SecureRobust``), adds
``secagg_mod`` to every client and leaves FedMA's ``train.fedma`` handlers off the ClientApp
(a FedMA reply is a trained layer in clear); ``strategy.name = "fedma"`` with ``[secagg]`` is
refused here, before the run, like robust rules without ``group_size``, ``[attack]`` and
``[lowrank]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flower_suite.registry import accepted_parameters
from flower_suite.secagg import SecAggConfig
from flower_suite.secagg.groups import check_group_size, num_groups
from flower_suite.simulations.config.attack import AttackConfig
from flower_suite.simulations.config.errors import ConfigError
from flower_suite.strategies import STRATEGIES
from flower_suite.strategies.fedma import FedMA
from flower_suite.strategies.secagg import FEDMA_REFUSAL, SecAggPlus, inspects_individual_updates
from flower_suite.strategies.secure_robust import SecureRobust

__all__ = ["check_secagg_weights", "validate_secagg"]

# SecAggPlus / SecureRobust keywords a TOML file cannot sensibly carry (the group seed is the
# experiment's seed).
_NOT_FROM_CONFIG = ("strategy", "source", "seed")
GROUP_SIZE = "group_size"


def secagg_keywords() -> set[str]:
    """Every keyword ``[secagg]`` accepts: SecAggPlus's, plus SecureRobust's ``group_size``."""
    known = set(accepted_parameters(SecAggPlus)) | set(accepted_parameters(SecureRobust))
    return known - {"self", *_NOT_FROM_CONFIG}


def validate_secagg(
    secagg: Mapping[str, Any],
    *,
    sampled_clients: int,
    strategy: str,
    attack: AttackConfig,
    num_clients: int,
    lowrank_enabled: bool,
) -> None:
    """Refuse unknown keywords, bad values and combinations secure aggregation cannot serve,
    given the clients per round, the strategy name, ``[attack]`` and whether ``[lowrank]`` is
    on (nothing when ``secagg`` is empty)."""
    if not secagg:
        return
    known = secagg_keywords()
    for key in secagg:
        if key not in known:
            raise ConfigError(f"secagg.{key}: unknown keyword (known: {', '.join(sorted(known))})")
    grouped = GROUP_SIZE in secagg
    protocol = {k: v for k, v in secagg.items() if k in SecAggConfig.__dataclass_fields__}
    sizes = _group_sizes(secagg[GROUP_SIZE], sampled_clients) if grouped else [sampled_clients]
    try:
        for size in sizes:
            SecAggConfig(**protocol).resolve(size)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"secagg: {err}") from err
    factory = STRATEGIES.get(strategy)
    if isinstance(factory, type) and issubclass(factory, FedMA):
        raise ConfigError(f"secagg: strategy {strategy!r}: {FEDMA_REFUSAL}")
    if not grouped and isinstance(factory, type) and inspects_individual_updates(factory):
        raise ConfigError(
            f"secagg: strategy {strategy!r} inspects individual updates, which "
            "secure aggregation hides from the server (it sees only the sum); use a "
            "FedAvg-family strategy, or set secagg.group_size to apply it to group means"
        )
    if attack.enabled:
        _check_attack_under_secagg(attack, partial=sampled_clients < num_clients)
    if lowrank_enabled:
        raise ConfigError("secagg: not supported together with [lowrank] yet")


def _check_attack_under_secagg(attack: AttackConfig, *, partial: bool) -> None:
    """Under secure aggregation an attack must be the clients' own doing: no server-side
    injector (it would need the updates the protocol hides) and no re-targeted sample (the
    protocol's stages go to the nodes it sampled). Update norms are not measured (the server
    never sees an update)."""
    if attack.is_omniscient:
        raise ConfigError(
            f"attack.name: {attack.name!r} as configured is omniscient (a server-side injector "
            "reading every honest update), which secure aggregation hides; for ALIE set "
            'attack.params.source = "own" (the colluders\' own updates)'
        )
    if partial and attack.pattern == "fixed_frequency":
        raise ConfigError(
            "attack.pattern: fixed_frequency re-targets a partial sample, which would break "
            "the secure-aggregation stages; use fixed_pool or sample every client"
        )


def _group_sizes(group_size: object, sampled_clients: int) -> list[int]:
    """The smallest and largest group a round of ``sampled_clients`` forms (both must resolve)."""
    try:
        g = check_group_size(group_size)
    except ValueError as err:
        raise ConfigError(f"secagg.group_size: {err}") from None
    if sampled_clients < g:
        raise ConfigError(
            f"secagg.group_size: {sampled_clients} clients per round cannot form a group of {g}"
        )
    count = num_groups(sampled_clients, g)
    return sorted({g + (sampled_clients - count * g) // count, -(-sampled_clients // count)})


def check_secagg_weights(secagg: Mapping[str, Any], partition_sizes: Sequence[int]) -> None:
    """Every client's weight (its example count) must fit ``max_weight``: the secure client
    refuses a larger one (it would drop out of every round), so say so before the run."""
    if not secagg or not partition_sizes:
        return
    max_weight = secagg.get("max_weight", SecAggConfig.max_weight)
    largest = max(partition_sizes)
    if largest > max_weight:
        raise ConfigError(
            f"secagg.max_weight: {max_weight} is below the largest client's example count "
            f"{largest}; raise max_weight (each doubling costs one modulus bit)"
        )
