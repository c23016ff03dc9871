"""Split a data set across clients with flwr-datasets' partitioners, deterministically.

We hand the partitioners a two-column table (label, original index) rather than the data
itself, so partitioning 60,000 MNIST images costs no copies, and read back the indices.
Schemes: ``iid`` (seeded shuffle, then equal contiguous shards), ``dirichlet`` (per-class
Dirichlet(alpha) proportions; Hsu et al. 2019), ``pathological`` (``classes_per_client``
classes each; McMahan et al. 2017) and ``natural`` (one client per natural owner, e.g. a
FEMNIST writer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from flower_suite.data.dataset import ArrayDataset

Scheme = Literal["iid", "dirichlet", "pathological", "natural"]
SCHEMES: tuple[str, ...] = ("iid", "dirichlet", "pathological", "natural")


@dataclass(frozen=True)
class PartitionSpec:
    """How to split: scheme plus its parameters. ``seed`` makes every scheme deterministic."""

    scheme: Scheme = "iid"
    alpha: float = 0.5
    classes_per_client: int = 2
    min_partition_size: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"partition.scheme must be one of {SCHEMES}, not {self.scheme!r}")
        if self.alpha <= 0:
            raise ValueError(f"partition.alpha must be > 0, not {self.alpha}")
        if self.classes_per_client < 1:
            raise ValueError(
                f"partition.classes_per_client must be >= 1, not {self.classes_per_client}"
            )


def _index_table(data: ArrayDataset, order: np.ndarray | None = None):
    from datasets import Dataset

    idx = np.arange(len(data), dtype=np.int64) if order is None else order
    return Dataset.from_dict({"label": data.y[idx], "idx": idx})


def partition_indices(
    data: ArrayDataset, num_partitions: int, spec: PartitionSpec
) -> list[np.ndarray]:
    """Indices into ``data`` for each of ``num_partitions`` clients (sorted, disjoint)."""
    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        IidPartitioner,
        NaturalIdPartitioner,
        PathologicalPartitioner,
    )

    if num_partitions < 1:
        raise ValueError(f"num_partitions must be >= 1, not {num_partitions}")
    if num_partitions > len(data):
        raise ValueError(f"{num_partitions} partitions but only {len(data)} samples")

    if spec.scheme == "natural":
        return _natural_partitions(data, num_partitions, spec.seed, NaturalIdPartitioner)

    if spec.scheme == "iid":
        # IidPartitioner shards contiguously without shuffling: shuffle first, with our seed.
        order = np.random.default_rng(spec.seed).permutation(len(data))
        partitioner = IidPartitioner(num_partitions=num_partitions)
        partitioner.dataset = _index_table(data, order)
    elif spec.scheme == "dirichlet":
        partitioner = DirichletPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            alpha=spec.alpha,
            min_partition_size=spec.min_partition_size,
            self_balancing=False,
            shuffle=True,
            seed=spec.seed,
        )
        partitioner.dataset = _index_table(data)
    else:
        present = int((data.label_counts() > 0).sum())
        if spec.classes_per_client > present:
            raise ValueError(
                f"partition.classes_per_client={spec.classes_per_client} but the data has "
                f"only {present} classes"
            )
        partitioner = PathologicalPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            num_classes_per_partition=spec.classes_per_client,
            class_assignment_mode="first-deterministic",
            shuffle=True,
            seed=spec.seed,
        )
        partitioner.dataset = _index_table(data)

    try:
        parts = [
            np.sort(np.asarray(partitioner.load_partition(i)["idx"], dtype=np.int64))
            for i in range(num_partitions)
        ]
    except ValueError as err:  # e.g. Dirichlet could not reach min_partition_size
        raise ValueError(f"partition.scheme={spec.scheme!r} failed: {err}") from err
    assigned = sum(len(p) for p in parts)
    if assigned != len(data):
        # PathologicalPartitioner leaves classes unassigned when clients x classes_per_client
        # is smaller than the number of classes; silently training on part of the data is
        # not what anyone asked for.
        covered = np.unique(data.y[np.concatenate(parts)])
        lost = sorted(set(np.unique(data.y).tolist()) - set(covered.tolist()))
        raise ValueError(
            f"partition.scheme={spec.scheme!r} assigns {assigned} of {len(data)} samples "
            f"(classes {lost} go to no client); raise num_clients or classes_per_client"
        )
    empty = [i for i, p in enumerate(parts) if len(p) == 0]
    if empty:
        raise ValueError(
            f"partition.scheme={spec.scheme!r} left clients {empty} without data; use fewer "
            "clients or a larger alpha / classes_per_client"
        )
    return parts


def _natural_partitions(
    data: ArrayDataset, num_partitions: int, seed: int, partitioner_cls: type
) -> list[np.ndarray]:
    if data.groups is None:
        raise ValueError(
            f"partition.scheme='natural' needs a data set with natural owners; {data.name} has none"
        )
    partitioner = partitioner_cls(partition_by="group")
    from datasets import Dataset

    partitioner.dataset = Dataset.from_dict(
        {"group": data.groups, "idx": np.arange(len(data), dtype=np.int64)}
    )
    available = partitioner.num_partitions
    if num_partitions > available:
        raise ValueError(
            f"partition.scheme='natural': {num_partitions} clients but {data.name} has only "
            f"{available} natural owners"
        )
    chosen = np.sort(np.random.default_rng(seed).choice(available, num_partitions, replace=False))
    return [
        np.sort(np.asarray(partitioner.load_partition(int(i))["idx"], dtype=np.int64))
        for i in chosen
    ]


def label_histograms(data: ArrayDataset, parts: list[np.ndarray]) -> np.ndarray:
    """Per-client label counts, shape (num_clients, num_classes)."""
    return np.stack([np.bincount(data.y[p], minlength=data.num_classes) for p in parts])


def format_histograms(hist: np.ndarray) -> str:
    """A plain-text table of per-client label counts, for logs and the run directory."""
    header = "client " + " ".join(f"{c:>5d}" for c in range(hist.shape[1])) + "   total"
    rows = [
        f"{i:>6d} " + " ".join(f"{v:>5d}" for v in row) + f" {row.sum():>7d}"
        for i, row in enumerate(hist)
    ]
    return "\n".join([header, *rows])
