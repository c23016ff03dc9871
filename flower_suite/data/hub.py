"""MNIST, CIFAR-10, FEMNIST and Shakespeare from the Hugging Face hub (needs internet).

Loading goes through ``datasets.load_dataset`` (the library flwr-datasets builds on); the
conversion into :class:`ArrayDataset` is separate and pure, so it is tested offline on
locally built ``datasets.Dataset`` objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from flower_suite.data.dataset import ArrayDataset, train_test_split

# LEAF's 80-character Shakespeare vocabulary; index 0 doubles as the out-of-vocabulary id.
SHAKESPEARE_VOCAB = (
    "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
)
_CHAR_TO_ID = {c: i for i, c in enumerate(SHAKESPEARE_VOCAB)}

CIFAR10_MEAN = (0.491372549, 0.482352941, 0.446666667)
CIFAR10_STD = (0.247058824, 0.243529412, 0.261568627)


@dataclass(frozen=True)
class HubSpec:
    """Where a data set lives on the hub and which columns hold what."""

    repo: str
    feature: str
    label: str
    num_classes: int
    group: str | None = None
    has_test_split: bool = True


HUB_DATASETS: dict[str, HubSpec] = {
    "mnist": HubSpec("ylecun/mnist", "image", "label", 10),
    "cifar10": HubSpec("uoft-cs/cifar10", "img", "label", 10),
    "femnist": HubSpec(
        "flwrlabs/femnist", "image", "character", 62, group="writer_id", has_test_split=False
    ),
    "shakespeare": HubSpec(
        "flwrlabs/shakespeare",
        "x",
        "y",
        len(SHAKESPEARE_VOCAB),
        group="character_id",
        has_test_split=False,
    ),
}


def _images_to_array(images: list[Any]) -> np.ndarray:
    """PIL images or nested lists -> (N, C, H, W) uint8."""
    arrays = [np.asarray(img, dtype=np.uint8) for img in images]
    stacked = np.stack(arrays)
    if stacked.ndim == 3:  # greyscale (N, H, W)
        return stacked[:, None, :, :]
    if stacked.ndim == 4:  # (N, H, W, C)
        return np.ascontiguousarray(stacked.transpose(0, 3, 1, 2))
    raise ValueError(f"unexpected image batch shape {stacked.shape}")


def _groups(dataset: Any, column: str | None) -> np.ndarray | None:
    if column is None or column not in dataset.column_names:
        return None
    values = dataset[column]
    _, inverse = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
    return inverse.astype(np.int64)


def convert_image_dataset(
    dataset: Any,
    spec: HubSpec,
    *,
    name: str,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> ArrayDataset:
    """An image ``datasets.Dataset`` -> float32 (N, C, H, W) in [0, 1], optionally standardised."""
    for column in (spec.feature, spec.label):
        if column not in dataset.column_names:
            raise ValueError(f"{name}: column {column!r} missing (has {dataset.column_names})")
    x = _images_to_array(dataset[spec.feature]).astype(np.float32) / 255.0
    if mean is not None and std is not None:
        m = np.asarray(mean, dtype=np.float32)[None, :, None, None]
        s = np.asarray(std, dtype=np.float32)[None, :, None, None]
        x = (x - m) / s
    y = np.asarray(dataset[spec.label], dtype=np.int64)
    return ArrayDataset(
        x=x, y=y, num_classes=spec.num_classes, name=name, groups=_groups(dataset, spec.group)
    )


def encode_text(text: str) -> np.ndarray:
    """Characters -> vocabulary ids (unknown characters map to 0)."""
    return np.fromiter((_CHAR_TO_ID.get(c, 0) for c in text), dtype=np.int64, count=len(text))


def convert_shakespeare(dataset: Any, *, name: str = "shakespeare") -> ArrayDataset:
    """LEAF Shakespeare (80-character context ``x``, next character ``y``) -> token ids."""
    spec = HUB_DATASETS["shakespeare"]
    contexts = dataset[spec.feature]
    lengths = {len(s) for s in contexts}
    if len(lengths) > 1:
        raise ValueError(f"{name}: contexts have different lengths {sorted(lengths)}")
    x = np.stack([encode_text(s) for s in contexts]) if contexts else np.zeros((0, 80), np.int64)
    targets = dataset[spec.label]
    if any(len(t) != 1 for t in targets):
        raise ValueError(f"{name}: every target must be exactly one character")
    y = np.array([_CHAR_TO_ID.get(t, 0) for t in targets], dtype=np.int64)
    return ArrayDataset(
        x=x, y=y, num_classes=spec.num_classes, name=name, groups=_groups(dataset, spec.group)
    )


def convert_hub_dataset(name: str, dataset: Any) -> ArrayDataset:
    """Dispatch to the right converter for one of :data:`HUB_DATASETS`."""
    if name not in HUB_DATASETS:
        raise ValueError(f"unknown hub data set {name!r} (known: {', '.join(HUB_DATASETS)})")
    if name == "shakespeare":
        return convert_shakespeare(dataset)
    spec = HUB_DATASETS[name]
    if name == "cifar10":
        return convert_image_dataset(dataset, spec, name=name, mean=CIFAR10_MEAN, std=CIFAR10_STD)
    return convert_image_dataset(dataset, spec, name=name)


def load_hub_split(
    name: str, *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[ArrayDataset, ArrayDataset]:
    """Download (or read from the local HF cache) ``name`` and return (train, test).

    Data sets published with a train split only (FEMNIST, Shakespeare) get a seeded hold-out.
    """
    if name not in HUB_DATASETS:
        raise ValueError(f"unknown hub data set {name!r} (known: {', '.join(HUB_DATASETS)})")
    from datasets import load_dataset

    spec = HUB_DATASETS[name]
    if spec.has_test_split:
        train = convert_hub_dataset(name, load_dataset(spec.repo, split="train"))
        test = convert_hub_dataset(name, load_dataset(spec.repo, split="test"))
        return train, test
    full = convert_hub_dataset(name, load_dataset(spec.repo, split="train"))
    return train_test_split(full, test_fraction, seed)
