"""The ``[secagg]`` section: secure aggregation for any experiment with a FedAvg-family rule.

An empty table (the default) means plain aggregation. Any keyword of
:class:`~flower_suite.strategies.secagg.SecAggPlus` may appear, e.g.::

    [secagg]
    num_shares = 5                # SecAgg+ neighbours (incl. self); >= num_clients = SecAgg
    reconstruction_threshold = 3
    clipping_range = 8.0

The engine then wraps the configured strategy in ``SecAggPlus``, adds ``secagg_mod`` to
every client and leaves FedMA's ``train.fedma`` handlers off the ClientApp (a FedMA reply is a
trained layer in clear); ``strategy.name = "fedma"`` with ``[secagg]`` is refused here, before
the run, like robust rules, ``[attack]`` and ``[lowrank]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flower_suite.registry import accepted_parameters
from flower_suite.secagg import SecAggConfig
from flower_suite.simulations.config.errors import ConfigError
from flower_suite.strategies import STRATEGIES
from flower_suite.strategies.fedma import FedMA
from flower_suite.strategies.secagg import FEDMA_REFUSAL, SecAggPlus, inspects_individual_updates

__all__ = ["check_secagg_weights", "validate_secagg"]

# SecAggPlus keywords a TOML file cannot sensibly carry.
_NOT_FROM_CONFIG = ("strategy", "source")


def validate_secagg(
    secagg: Mapping[str, Any],
    *,
    sampled_clients: int,
    strategy: str,
    attack_enabled: bool,
    lowrank_enabled: bool,
) -> None:
    """Refuse unknown keywords, bad values and combinations secure aggregation cannot serve,
    given the clients per round, the strategy name and whether ``[attack]`` and ``[lowrank]``
    are on (nothing when ``secagg`` is empty)."""
    if not secagg:
        return
    known = set(accepted_parameters(SecAggPlus)) - {"self", *_NOT_FROM_CONFIG}
    for key in secagg:
        if key not in known:
            raise ConfigError(f"secagg.{key}: unknown keyword (known: {', '.join(sorted(known))})")
    protocol = {k: v for k, v in secagg.items() if k in SecAggConfig.__dataclass_fields__}
    try:
        SecAggConfig(**protocol).resolve(sampled_clients)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"secagg: {err}") from err
    factory = STRATEGIES.get(strategy)
    if isinstance(factory, type) and issubclass(factory, FedMA):
        raise ConfigError(f"secagg: strategy {strategy!r}: {FEDMA_REFUSAL}")
    if isinstance(factory, type) and inspects_individual_updates(factory):
        raise ConfigError(
            f"secagg: strategy {strategy!r} inspects individual updates, which "
            "secure aggregation hides from the server (it sees only the sum); use a "
            "FedAvg-family strategy"
        )
    if attack_enabled:
        raise ConfigError(
            "secagg: [attack] experiments measure individual updates, which secure "
            "aggregation hides; run them without [secagg]"
        )
    if lowrank_enabled:
        raise ConfigError("secagg: not supported together with [lowrank] yet")


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
