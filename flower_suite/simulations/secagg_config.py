"""The ``[secagg]`` section: secure aggregation for any experiment with a FedAvg-family rule.

An empty table (the default) means plain aggregation. Any keyword of
:class:`~flower_suite.strategies.secagg.SecAggPlus` may appear, e.g.::

    [secagg]
    num_shares = 5                # SecAgg+ neighbours (incl. self); >= num_clients = SecAgg
    reconstruction_threshold = 3
    clipping_range = 8.0

The runner then wraps the configured strategy in ``SecAggPlus``, adds ``secagg_mod`` to
every client and leaves FedMA's ``train.fedma`` handlers off the ClientApp (a FedMA reply is a
trained layer in clear); ``strategy.name = "fedma"`` with ``[secagg]`` is refused here, before
the run, like robust rules, ``[attack]`` and ``[lowrank]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flwr.serverapp.strategy import Strategy

    from flower_suite.simulations.config import ExperimentConfig

# SecAggPlus keywords a TOML file cannot sensibly carry.
_NOT_FROM_CONFIG = ("strategy", "source")


def secagg_enabled(config: ExperimentConfig) -> bool:
    return bool(config.secagg)


def validate_secagg(config: ExperimentConfig) -> None:
    """Refuse unknown keywords, bad values and combinations secure aggregation cannot serve."""
    from flower_suite.registry import accepted_parameters
    from flower_suite.secagg import SecAggConfig
    from flower_suite.simulations.config import ConfigError
    from flower_suite.strategies.secagg import SecAggPlus

    if not secagg_enabled(config):
        return
    known = set(accepted_parameters(SecAggPlus)) - {"self", *_NOT_FROM_CONFIG}
    for key in config.secagg:
        if key not in known:
            raise ConfigError(f"secagg.{key}: unknown keyword (known: {', '.join(sorted(known))})")
    protocol = {k: v for k, v in config.secagg.items() if k in SecAggConfig.__dataclass_fields__}
    try:
        SecAggConfig(**protocol).resolve(config.sampled_clients)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"secagg: {err}") from err
    from flower_suite.strategies import STRATEGIES
    from flower_suite.strategies.fedma import FedMA
    from flower_suite.strategies.secagg import FEDMA_REFUSAL, inspects_individual_updates

    factory = STRATEGIES.get(config.strategy.name)
    if isinstance(factory, type) and issubclass(factory, FedMA):
        raise ConfigError(f"secagg: strategy {config.strategy.name!r}: {FEDMA_REFUSAL}")
    if isinstance(factory, type) and inspects_individual_updates(factory):
        raise ConfigError(
            f"secagg: strategy {config.strategy.name!r} inspects individual updates, which "
            "secure aggregation hides from the server (it sees only the sum); use a "
            "FedAvg-family strategy"
        )
    if config.attack.enabled:
        raise ConfigError(
            "secagg: [attack] experiments measure individual updates, which secure "
            "aggregation hides; run them without [secagg]"
        )
    if config.lowrank.enabled:
        raise ConfigError("secagg: not supported together with [lowrank] yet")


def check_secagg_weights(config: ExperimentConfig, partition_sizes: Sequence[int]) -> None:
    """Every client's weight (its example count) must fit ``max_weight``: the secure client
    refuses a larger one (it would drop out of every round), so say so before the run."""
    if not secagg_enabled(config) or not partition_sizes:
        return
    from flower_suite.secagg import SecAggConfig
    from flower_suite.simulations.config import ConfigError

    max_weight = config.secagg.get("max_weight", SecAggConfig.max_weight)
    largest = max(partition_sizes)
    if largest > max_weight:
        raise ConfigError(
            f"secagg.max_weight: {max_weight} is below the largest client's example count "
            f"{largest}; raise max_weight (each doubling costs one modulus bit)"
        )


def wrap_secagg(strategy: Strategy, config: ExperimentConfig) -> Strategy:
    """``SecAggPlus(strategy, **config.secagg)`` (a robust rule is refused with a clear error)."""
    from flower_suite.strategies.secagg import SecAggPlus

    kwargs: dict[str, Any] = dict(config.secagg)
    return SecAggPlus(strategy, **kwargs)
