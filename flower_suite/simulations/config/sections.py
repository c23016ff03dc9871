"""The plain sections of an experiment config: data, partition, client, resources, lowrank.

Frozen (hashable) dataclasses: the engine caches loaded data keyed by them. ``[model]`` and
``[strategy]`` are a :class:`NamedConfig` (a registry name plus its keyword arguments). The
``[attack]`` and ``[secagg]`` sections have their own modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flower_suite.simulations.config.errors import ConfigError
from flower_suite.training import TrainConfig

__all__ = [
    "ClientConfig",
    "DataConfig",
    "LowRankConfig",
    "NamedConfig",
    "PartitionConfig",
    "ResourcesConfig",
]


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"
    path: str = ""  # local directory for file-based data sets (MNIST IDX)
    test_fraction: float = 0.2  # hold-out for data sets published without a test split


@dataclass(frozen=True)
class PartitionConfig:
    scheme: str = "iid"
    alpha: float = 0.5
    classes_per_client: int = 2
    min_partition_size: int = 1
    # Data partitions; 0 = one per client. Fewer partitions than clients means clients
    # share data: client i trains on partition i mod num_partitions unless the strategy
    # assigns one (DETOX assigns each node group one partition).
    num_partitions: int = 0


@dataclass(frozen=True)
class ClientConfig(TrainConfig):
    """``[client]``: the client hyper-parameters (declared once, by :class:`TrainConfig`,
    which also checks their ranges) plus the run's learning-rate schedule."""

    # lr_t = lr * lr_decay ** t in round t (the edge-case papers' 0.998^t); 1 = constant.
    lr_decay: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], not {self.lr_decay}")


@dataclass(frozen=True)
class ResourcesConfig:
    num_cpus: float = 1.0
    num_gpus: float = 0.0


@dataclass(frozen=True)
class LowRankConfig:
    """PUFFERFISH in federated training: ``warmup_rounds`` full-rank rounds, then factors.

    ``rank_ratio = 0`` (the default) trains the full-rank model throughout.
    """

    rank_ratio: float = 0.0
    warmup_rounds: int = 1
    keep_full_rank: tuple[str, ...] = ()  # module names kept full-rank (plus first/last)
    keep_first_and_last: bool = True
    lr_factor: float = 1.0  # client lr multiplier after the switch

    def __post_init__(self) -> None:
        keep = self.keep_full_rank
        if isinstance(keep, str) or not all(isinstance(name, str) for name in keep):
            raise ConfigError(
                f"lowrank.keep_full_rank: expected a list of module names, got {keep!r}"
            )
        object.__setattr__(self, "keep_full_rank", tuple(keep))

    @property
    def enabled(self) -> bool:
        return self.rank_ratio > 0


@dataclass(frozen=True)
class NamedConfig:
    """A registry name plus the keyword arguments passed to its factory."""

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
