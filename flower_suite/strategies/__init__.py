"""Server-side strategies (Flower Message API) and the registry configs resolve names through.

This issue registers Flower's own FedAvg and FedProx; robust aggregation, backdoor defenses
and FedMA register theirs in later modules of this package. Use ``register_strategy`` for a
custom one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flwr.serverapp.strategy import FedAvg, FedProx, Strategy

from flower_suite.registry import Registry

STRATEGIES: Registry[Strategy] = Registry("strategy")
STRATEGIES.register("fedavg", FedAvg)
STRATEGIES.register("fedprox", FedProx)


def register_strategy(name: str, factory: Callable[..., Strategy]) -> None:
    """Make ``factory`` available to experiment configs as ``strategy.name = name``."""
    STRATEGIES.register(name, factory)


def create_strategy(name: str, **kwargs: Any) -> Strategy:
    """Instantiate the registered strategy ``name``."""
    return STRATEGIES.create(name, **kwargs)


__all__ = ["STRATEGIES", "create_strategy", "register_strategy"]
