"""The ``[secagg]`` section: secure aggregation for any experiment with a FedAvg-family rule.

An empty table (the default) means plain aggregation. Any keyword of
:class:`~flower_suite.strategies.secagg.SecAggPlus` may appear, e.g.::

    [secagg]
    num_shares = 5                # SecAgg+ neighbours (incl. self); >= num_clients = SecAgg
    reconstruction_threshold = 3
    clipping_range = 8.0

The runner then wraps the configured strategy in ``SecAggPlus`` and adds ``secagg_mod`` to
every client.
"""

from __future__ import annotations

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
    from flower_suite.strategies.secagg import _ROBUST

    factory = STRATEGIES.get(config.strategy.name)
    if isinstance(factory, type) and issubclass(factory, _ROBUST):
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


def wrap_secagg(strategy: Strategy, config: ExperimentConfig) -> Strategy:
    """``SecAggPlus(strategy, **config.secagg)`` (a robust rule is refused with a clear error)."""
    from flower_suite.strategies.secagg import SecAggPlus

    kwargs: dict[str, Any] = dict(config.secagg)
    return SecAggPlus(strategy, **kwargs)
