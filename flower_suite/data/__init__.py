"""Framework-free data: real data sets as in-memory arrays, and deterministic partitioning."""

from flower_suite.data.dataset import ArrayDataset, train_test_split
from flower_suite.data.digits import load_digits_dataset, load_digits_split
from flower_suite.data.mnist import MNIST_DIR_ENV, load_mnist_idx, read_idx
from flower_suite.data.partition import (
    PartitionSpec,
    format_histograms,
    label_histograms,
    partition_indices,
)
from flower_suite.data.registry import DATASETS, load_dataset, register_dataset

__all__ = [
    "DATASETS",
    "MNIST_DIR_ENV",
    "ArrayDataset",
    "PartitionSpec",
    "format_histograms",
    "label_histograms",
    "load_dataset",
    "load_digits_dataset",
    "load_digits_split",
    "load_mnist_idx",
    "partition_indices",
    "read_idx",
    "register_dataset",
    "train_test_split",
]
