"""Turn an experiment config into the pieces Flower needs: model factory and client data.

Loading and partitioning are cached per process, keyed by the (frozen, hashable) config
sections: a Ray actor that serves many clients over many rounds loads the data once.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from flower_suite.clients.client_app import ClientData
from flower_suite.data.dataset import ArrayDataset
from flower_suite.data.partition import PartitionSpec, label_histograms, partition_indices
from flower_suite.data.registry import DATASETS, load_dataset
from flower_suite.models import MODELS
from flower_suite.models.lowrank_spec import LowRankSpec
from flower_suite.registry import accepted_parameters
from flower_suite.simulations.config import DataConfig, ExperimentConfig, PartitionConfig
from flower_suite.simulations.threats.plan import ThreatPlan, plan_threat
from flower_suite.training import TrainConfig


@functools.lru_cache(maxsize=4)
def load_split(
    data: DataConfig, seed: int, loader: DataLoader | None = None
) -> tuple[ArrayDataset, ArrayDataset]:
    """The experiment's (train, test) data, loaded once per process; ``loader`` is the
    registered loader the driver resolved (a Ray worker may not have the registration)."""
    if loader is None:
        return load_dataset(data.dataset, data.path, data.test_fraction, seed)
    return loader(data.path, data.test_fraction, seed)


@functools.lru_cache(maxsize=4)
def client_partitions(
    data: DataConfig, partition: PartitionConfig, num_clients: int, seed: int
) -> tuple[np.ndarray, ...]:
    """Each client's training indices (deterministic in ``seed``)."""
    train, _ = load_split(data, seed)
    spec = PartitionSpec(
        scheme=partition.scheme,  # type: ignore[arg-type]
        alpha=partition.alpha,
        classes_per_client=partition.classes_per_client,
        min_partition_size=partition.min_partition_size,
        seed=seed,
    )
    return tuple(partition_indices(train, num_clients, spec))


ModelFactory = Callable[..., nn.Module]
DataLoader = Callable[[str, float, int], tuple[ArrayDataset, ArrayDataset]]

# Data up to this size travels inside the pickled ClientApp to each Ray actor; larger data
# is loaded (once, cached) by every actor instead.
SHIP_DATA_LIMIT_BYTES = 64 * 2**20


@dataclass(frozen=True)
class ExperimentTask:
    """Model and data factories for one experiment (picklable).

    ``split`` and ``parts`` optionally carry data and partition indices computed by the
    driver, so Ray actors need not reload and repartition them (see :meth:`preloaded`).
    """

    config: ExperimentConfig
    split: tuple[ArrayDataset, ArrayDataset] | None = field(default=None, compare=False, repr=False)
    parts: tuple[np.ndarray, ...] | None = field(default=None, compare=False, repr=False)
    # The seeded attack plan of configs with an [attack] section.
    threat: ThreatPlan | None = field(default=None, compare=False, repr=False)
    # The model factory and data loader the driver resolved by name: they travel with the
    # task, so components a user registered in the driver process work in Ray workers too.
    model_factory: ModelFactory | None = field(default=None, compare=False, repr=False)
    data_loader: DataLoader | None = field(default=None, compare=False, repr=False)

    def preloaded(self, ship_limit_bytes: int = SHIP_DATA_LIMIT_BYTES) -> ExperimentTask:
        """A copy carrying the partitions (and attack plan), and the data too when it is
        under the limit."""
        train, test = self.data()
        size = sum(a.nbytes for d in (train, test) for a in (d.x, d.y))
        split = (train, test) if size <= ship_limit_bytes else None
        return ExperimentTask(
            self.config,
            split=split,
            parts=self.partitions(),
            threat=self.threat_plan(),
            model_factory=MODELS.get(self.config.model.name),
            data_loader=DATASETS.get(self.config.data.dataset),
        )

    def threat_plan(self) -> ThreatPlan | None:
        """The attack plan, or None without ``[attack]``; computed here when not carried (it
        is deterministic in the config)."""
        if self.threat is not None or not self.config.attack.enabled:
            return self.threat
        return plan_threat(self)

    @property
    def train_config(self) -> TrainConfig:
        """Client defaults (``lr`` before ``client.lr_decay``, which the server sends)."""
        return self.config.client.train_config()

    def data(self) -> tuple[ArrayDataset, ArrayDataset]:
        if self.split is not None:
            return self.split
        return load_split(self.config.data, self.config.seed, self.data_loader)

    def partitions(self) -> tuple[np.ndarray, ...]:
        if self.parts is not None:
            return self.parts
        c = self.config
        return client_partitions(c.data, c.partition, self.num_partitions, c.seed)

    @property
    def num_partitions(self) -> int:
        return self.config.partition.num_partitions or self.config.num_clients

    def label_histograms(self) -> np.ndarray:
        return label_histograms(self.data()[0], list(self.partitions()))

    def model_kwargs(self) -> dict[str, Any]:
        """Config kwargs plus num_classes / in_channels inferred from the data when accepted."""
        kwargs = dict(self.config.model.kwargs)
        params = accepted_parameters(self._model_factory())
        train, _ = self.data()
        if "num_classes" in params:
            kwargs.setdefault("num_classes", train.num_classes)
        if "in_channels" in params and train.x.ndim == 4:
            kwargs.setdefault("in_channels", int(train.x.shape[1]))
        return kwargs

    def build_model(self, seed: int | None = None) -> nn.Module:
        """A fresh model; with ``seed``, its initial weights are deterministic."""
        factory = self._model_factory()
        if seed is None:
            return factory(**self.model_kwargs())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return factory(**self.model_kwargs())

    def _model_factory(self) -> ModelFactory:
        return self.model_factory or MODELS.get(self.config.model.name)

    def model_size(self) -> int:
        """Number of values in the model's state (parameters and buffers)."""
        return sum(int(t.numel()) for t in self.build_model(seed=0).state_dict().values())

    @property
    def lowrank_spec(self) -> LowRankSpec | None:
        """The PUFFERFISH factorization the config asks for, if any."""
        c = self.config.lowrank
        if not c.enabled:
            return None
        return LowRankSpec(c.rank_ratio, c.keep_full_rank, c.keep_first_and_last)

    def client_data(self, partition_id: int) -> ClientData:
        """Training partition ``partition_id mod num_partitions`` plus a test-set shard."""
        n = self.config.num_clients
        if not 0 <= partition_id < n:
            raise ValueError(f"partition-id {partition_id} outside [0, {n})")
        data_partition = partition_id % self.num_partitions
        train, test = self.data()
        order = np.random.default_rng(self.config.seed).permutation(len(test))
        shard = np.array_split(order, self.num_partitions)[data_partition]
        return ClientData(
            train=train.subset(self.partitions()[data_partition]),
            test=test.subset(shard) if len(shard) else None,
        )

    def check_model_fits_data(self) -> None:
        """Run one test batch through the model, so a shape mismatch fails before simulating."""
        _, test = self.data()
        model = self.build_model(seed=0)
        model.eval()
        try:
            with torch.no_grad():
                out = model(torch.as_tensor(test.x[:2]))
        except RuntimeError as err:
            raise ValueError(
                f"model.name: {self.config.model.name!r} does not accept "
                f"{self.config.data.dataset} inputs of shape {tuple(test.x.shape[1:])}: {err}"
            ) from err
        if out.ndim != 2 or out.shape[1] != test.num_classes:
            raise ValueError(
                f"model.name: {self.config.model.name!r} outputs {tuple(out.shape[1:])} but "
                f"{self.config.data.dataset} has {test.num_classes} classes"
            )
        spec = self.lowrank_spec
        if spec is not None:
            try:
                factorized = spec.apply(model, svd_init=False)  # the structure is enough
            except ValueError as err:
                raise ValueError(f"lowrank: {err}") from err
            if factorized.state_dict().keys() == model.state_dict().keys():
                raise ValueError(
                    f"lowrank: rank_ratio {spec.rank_ratio} factorizes no layer of "
                    f"{self.config.model.name!r} (each would not save parameters or is kept)"
                )


def accepts(factory: Any, name: str) -> bool:
    """Whether ``factory`` takes keyword ``name`` (or ``**kwargs``), following the MRO."""
    params = accepted_parameters(factory)
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
