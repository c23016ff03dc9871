"""``ExperimentConfig``: one experiment, as the sections of its TOML file.

Schema (every field optional except where a default cannot be guessed; see
``experiments/digits_fedavg.toml`` for a full example)::

    name, seed, rounds, num_clients, clients_per_round, evaluate_clients, output_dir,
    engine, watchdog_s
    [data]       dataset, path, test_fraction
    [partition]  scheme, alpha, classes_per_client, min_partition_size, num_partitions
    [model]      name, <model keyword arguments>
    [strategy]   name, <strategy keyword arguments>
    [client]     local_epochs, lr, lr_decay, momentum, weight_decay, batch_size, proximal_mu
    [resources]  num_cpus, num_gpus
    [lowrank]    rank_ratio, warmup_rounds, keep_full_rank, keep_first_and_last, lr_factor
    [attack]     name, attackers, num_attackers, pattern, every_k, start_round, edge_set, ...
                 (see :class:`flower_suite.simulations.config.attack.AttackConfig`)
    [secagg]     SecAggPlus keywords (see :mod:`flower_suite.simulations.config.secagg`)
    [compression] name, budget, bits, q, error_feedback
                 (see :mod:`flower_suite.simulations.config.compression`)
    [ray]        address, init_args (see :mod:`flower_suite.simulations.config.backend`)

Building one from TOML (with checks naming the field) is :mod:`~flower_suite.simulations.
config.loading`'s job; the checks across fields are :mod:`~flower_suite.simulations.config.
validation`'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flower_suite.simulations.config.attack import AttackConfig
from flower_suite.simulations.config.backend import RayConfig
from flower_suite.simulations.config.compression import CompressionConfig
from flower_suite.simulations.config.sections import (
    ClientConfig,
    DataConfig,
    LowRankConfig,
    NamedConfig,
    PartitionConfig,
    ResourcesConfig,
)

__all__ = ["ExperimentConfig"]


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    seed: int = 0
    rounds: int = 10
    num_clients: int = 10
    clients_per_round: int = 0  # 0 = every client, every round
    evaluate_clients: int = 0  # clients doing federated evaluation per round; 0 = none
    output_dir: str = "runs"
    # Where the clients run: "ray" (Flower's simulation engine) or "inprocess" (no Ray).
    engine: str = "ray"
    # Seconds without any reply while the server waits for one before the run is stopped as
    # stalled (a lost Ray actor, a dead cluster node); 0 = wait for ever.
    watchdog_s: float = 600.0
    data: DataConfig = field(default_factory=DataConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    model: NamedConfig = field(default_factory=lambda: NamedConfig("digits_cnn"))
    strategy: NamedConfig = field(default_factory=lambda: NamedConfig("fedavg"))
    client: ClientConfig = field(default_factory=ClientConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    lowrank: LowRankConfig = field(default_factory=LowRankConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    # Secure aggregation: SecAggPlus keywords (num_shares, reconstruction_threshold,
    # clipping_range, ...); an empty table (the default) means plain aggregation.
    secagg: Mapping[str, Any] = field(default_factory=dict)
    # Compressed client updates (ATOMO, QSGD, ...); name = "none" (the default): plain replies.
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    # The Ray the "ray" engine starts or attaches to (address, init_args).
    ray: RayConfig = field(default_factory=RayConfig)

    @property
    def sampled_clients(self) -> int:
        return self.clients_per_round or self.num_clients

    @property
    def secagg_enabled(self) -> bool:
        """Secure aggregation: a non-empty ``[secagg]`` table."""
        return bool(self.secagg)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain TOML-able data (named sections flattened)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, NamedConfig):
                out[f.name] = {"name": value.name, **dict(value.kwargs)}
            elif dataclasses.is_dataclass(value) and not isinstance(value, type):
                out[f.name] = dataclasses.asdict(value)
            elif isinstance(value, Mapping):
                out[f.name] = dict(value)
            else:
                out[f.name] = value
        return out
