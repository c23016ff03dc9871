"""Server-side strategies (Flower Message API) and the registry configs resolve names through.

Robust strategies keep Flower's names, so switching is one import::

    from flower_suite.strategies import Krum   # instead of flwr.serverapp.strategy
    strategy = Krum(fraction_train=0.5, num_malicious_nodes=2)

``FedAvg`` and ``FedProx`` are Flower's algorithms behind the same reply validator as the
robust rules (a NaN or malformed reply is excluded, not averaged in).

Registered names (``strategy.name`` in experiment configs): fedavg, fedprox, krum, multikrum,
bulyan, fedmedian, fedtrimmedavg, geometric_median (alias rfa), signsgd, centeredclipping,
detox; backdoor defenses normclipping (alias ndc), weakdp, flame, foolsgold, crfl; fedma
(FedMA, its own round structure: ``FedMA(model_fn=...)``); draco (DRACO, coded
redundant computation over ``train.draco`` messages, simulation / cross-silo only).
``register_strategy`` adds your own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flwr.serverapp.strategy import Strategy

from flower_suite.registry import Registry
from flower_suite.strategies.compressed import Compressed, CompressionRoundRecord
from flower_suite.strategies.defenses import CRFL, FLAME, FoolsGold, NormClipping, WeakDP
from flower_suite.strategies.detox import DETOX
from flower_suite.strategies.draco import Draco, DracoRoundRecord
from flower_suite.strategies.fedavg import FedAvg, FedProx
from flower_suite.strategies.fedma import FedMA
from flower_suite.strategies.legacy import LegacyRobust
from flower_suite.strategies.robust import RobustFedAvg, RoundRecord
from flower_suite.strategies.robust_rules import (
    RFA,
    Bulyan,
    CenteredClipping,
    FedMedian,
    FedTrimmedAvg,
    GeometricMedian,
    Krum,
    MultiKrum,
    SignSGD,
)
from flower_suite.strategies.secagg import SecAggPlus, SecAggRoundRecord
from flower_suite.strategies.secure_robust import SecureRobust, SecureRobustRoundRecord

STRATEGIES: Registry[Strategy] = Registry("strategy")
_BUILTIN: tuple[tuple[str, Callable[..., Strategy]], ...] = (
    ("fedavg", FedAvg),
    ("fedprox", FedProx),
    ("krum", Krum),
    ("multikrum", MultiKrum),
    ("bulyan", Bulyan),
    ("fedmedian", FedMedian),
    ("fedtrimmedavg", FedTrimmedAvg),
    ("geometric_median", GeometricMedian),
    ("rfa", RFA),
    ("signsgd", SignSGD),
    ("centeredclipping", CenteredClipping),
    ("detox", DETOX),
    # Backdoor defenses (issue 4).
    ("normclipping", NormClipping),
    ("ndc", NormClipping),
    ("weakdp", WeakDP),
    ("flame", FLAME),
    ("foolsgold", FoolsGold),
    ("crfl", CRFL),
    # FedMA (issue 6): layer-wise matched averaging with its own round structure.
    ("fedma", FedMA),
    # DRACO (issue 15): coded redundant computation, exact recovery; simulation / cross-silo.
    ("draco", Draco),
)
for _name, _factory in _BUILTIN:
    STRATEGIES.register(_name, _factory)


def register_strategy(name: str, factory: Callable[..., Strategy]) -> None:
    """Make ``factory`` available to experiment configs as ``strategy.name = name``."""
    STRATEGIES.register(name, factory)


def create_strategy(name: str, **kwargs: Any) -> Strategy:
    """Instantiate the registered strategy ``name``."""
    return STRATEGIES.create(name, **kwargs)


__all__ = [
    "CRFL",
    "DETOX",
    "FLAME",
    "RFA",
    "STRATEGIES",
    "Bulyan",
    "CenteredClipping",
    "Compressed",
    "CompressionRoundRecord",
    "Draco",
    "DracoRoundRecord",
    "FedAvg",
    "FedMA",
    "FedMedian",
    "FedProx",
    "FedTrimmedAvg",
    "FoolsGold",
    "GeometricMedian",
    "Krum",
    "LegacyRobust",
    "MultiKrum",
    "NormClipping",
    "RobustFedAvg",
    "RoundRecord",
    "SecAggPlus",
    "SecAggRoundRecord",
    "SecureRobust",
    "SecureRobustRoundRecord",
    "SignSGD",
    "WeakDP",
    "create_strategy",
    "register_strategy",
]
