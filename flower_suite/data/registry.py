"""Named data sets for experiment configs: ``data.dataset = "digits"`` resolves here.

Every loader takes ``(path, test_fraction, seed)`` and returns ``(train, test)``.
"""

from __future__ import annotations

from collections.abc import Callable

from flower_suite.data.dataset import ArrayDataset
from flower_suite.data.digits import load_digits_split
from flower_suite.data.hub import load_hub_split
from flower_suite.data.mnist import load_mnist_idx
from flower_suite.data.synthetic import load_synthetic_cifar
from flower_suite.registry import Registry

Split = tuple[ArrayDataset, ArrayDataset]
Loader = Callable[[str, float, int], Split]

DATASETS: Registry[Split] = Registry("data set")


def _digits(path: str, test_fraction: float, seed: int) -> Split:
    return load_digits_split()


def _mnist_local(path: str, test_fraction: float, seed: int) -> Split:
    return load_mnist_idx(path or None, "train"), load_mnist_idx(path or None, "test")


def _hub(name: str) -> Loader:
    def load(path: str, test_fraction: float, seed: int) -> Split:
        return load_hub_split(name, test_fraction=test_fraction, seed=seed)

    load.__name__ = f"load_{name}_hub"
    return load


DATASETS.register("digits", _digits)
DATASETS.register("mnist", _mnist_local)
DATASETS.register("mnist_hub", _hub("mnist"))
DATASETS.register("cifar10", _hub("cifar10"))
DATASETS.register("femnist", _hub("femnist"))
DATASETS.register("shakespeare", _hub("shakespeare"))
# Synthetic, CIFAR-shaped: for timing and bytes benchmarks, never for accuracy claims.
DATASETS.register("synthetic_cifar", load_synthetic_cifar)


def register_dataset(name: str, loader: Loader) -> None:
    """Make ``loader(path, test_fraction, seed) -> (train, test)`` usable as ``data.dataset``."""
    DATASETS.register(name, loader)


def load_dataset(name: str, path: str = "", test_fraction: float = 0.2, seed: int = 0) -> Split:
    """Load the registered data set ``name`` as (train, test)."""
    return DATASETS.get(name)(path, test_fraction, seed)
