"""The in-memory data set every loader returns: features, integer labels, optional groups."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ArrayDataset:
    """Features ``x`` (N, ...), labels ``y`` (N,) and, for naturally partitioned data, ``groups``.

    ``groups`` holds the natural owner of each sample (a FEMNIST writer, a Shakespeare
    character) and is what the ``natural`` partition scheme splits by.
    """

    x: np.ndarray
    y: np.ndarray
    num_classes: int
    name: str = "dataset"
    groups: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"{self.name}: {self.x.shape[0]} samples but {self.y.shape[0]} labels")
        if self.y.ndim != 1 or not np.issubdtype(self.y.dtype, np.integer):
            raise ValueError(f"{self.name}: labels must be a 1-D integer array")
        if self.groups is not None and self.groups.shape[0] != self.y.shape[0]:
            raise ValueError(f"{self.name}: groups must have one entry per sample")
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= self.num_classes):
            raise ValueError(
                f"{self.name}: labels must lie in [0, {self.num_classes}), "
                f"found [{self.y.min()}, {self.y.max()}]"
            )
        if np.issubdtype(self.x.dtype, np.floating) and not np.isfinite(self.x).all():
            raise ValueError(f"{self.name}: features contain NaN or Inf")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, indices: np.ndarray) -> ArrayDataset:
        """The samples at ``indices`` (a copy; the original is never modified)."""
        idx = np.asarray(indices, dtype=np.int64)
        return ArrayDataset(
            x=self.x[idx],
            y=self.y[idx],
            num_classes=self.num_classes,
            name=self.name,
            groups=None if self.groups is None else self.groups[idx],
        )

    def label_counts(self) -> np.ndarray:
        """Samples per class, shape (num_classes,)."""
        return np.bincount(self.y, minlength=self.num_classes)


def train_test_split(
    data: ArrayDataset, test_size: int | float, seed: int
) -> tuple[ArrayDataset, ArrayDataset]:
    """Shuffle with ``seed`` and hold out ``test_size`` samples (a count or a fraction)."""
    n = len(data)
    n_test = round(test_size * n) if isinstance(test_size, float) else int(test_size)
    if not 0 < n_test < n:
        raise ValueError(f"{data.name}: test_size {test_size} leaves an empty split of {n}")
    order = np.random.default_rng(seed).permutation(n)
    return data.subset(order[n_test:]), data.subset(order[:n_test])
