"""scikit-learn's 8x8 handwritten digits: the default real data set, available offline.

1,797 real images of 10 classes, 16 grey levels. The fixed split holds out 360 images
(the split used by the robust-aggregation and edge-case specs), leaving 1,437 for training.
"""

from __future__ import annotations

import numpy as np

from flower_suite.data.dataset import ArrayDataset, train_test_split

DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0


def load_digits_dataset() -> ArrayDataset:
    """All 1,797 digits as (N, 1, 8, 8) float32 in [0, 1] with int64 labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    return ArrayDataset(x=x, y=bunch.target.astype(np.int64), num_classes=10, name="digits")


def load_digits_split(
    test_size: int = DIGITS_TEST_SIZE, seed: int = DIGITS_SPLIT_SEED
) -> tuple[ArrayDataset, ArrayDataset]:
    """The fixed train/test split (1,437 / 360 by default); the same on every machine."""
    return train_test_split(load_digits_dataset(), test_size, seed)
