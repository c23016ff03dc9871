"""Synthetic CIFAR-shaped images, for timing and communication benchmarks only.

This machine cannot download CIFAR-10, but bytes per round and seconds per batch of a
ResNet-18 depend on the input shape, not on the pixels. Each class is a fixed smooth random
template (a 3 x 8 x 8 pattern upsampled to 32 x 32) plus Gaussian noise, so a model can learn
the task and a learning curve is meaningful; accuracies on it say nothing about CIFAR-10.
"""

from __future__ import annotations

import numpy as np

from flower_suite.data.dataset import ArrayDataset


def synthetic_images(
    num_samples: int,
    *,
    num_classes: int = 10,
    shape: tuple[int, int, int] = (3, 32, 32),
    noise: float = 1.0,
    seed: int = 0,
    template_seed: int = 1234,
    name: str = "synthetic_cifar",
) -> ArrayDataset:
    """``num_samples`` balanced images ``template[y] + noise * N(0, 1)`` (float32)."""
    if num_samples < 1 or num_classes < 2:
        raise ValueError("need num_samples >= 1 and num_classes >= 2")
    channels, height, width = shape
    if height % 8 or width % 8:
        raise ValueError(f"image height and width must be multiples of 8, not {shape}")
    # Templates depend on template_seed only, so train and test share them.
    coarse = np.random.default_rng(template_seed).standard_normal((num_classes, channels, 8, 8))
    templates = coarse.repeat(height // 8, axis=2).repeat(width // 8, axis=3)
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(num_samples) % num_classes).astype(np.int64)
    x = templates[y] + noise * rng.standard_normal((num_samples, *shape))
    return ArrayDataset(x=x.astype(np.float32), y=y, num_classes=num_classes, name=name)


def load_synthetic_cifar(
    path: str = "", test_fraction: float = 0.2, seed: int = 0
) -> tuple[ArrayDataset, ArrayDataset]:
    """2,000 training and ``2000 * test_fraction / (1 - test_fraction)`` test images."""
    num_train = 2000
    num_test = max(1, round(num_train * test_fraction / (1 - test_fraction)))
    return (
        synthetic_images(num_train, seed=seed),
        synthetic_images(num_test, seed=seed + 1_000_003),
    )
