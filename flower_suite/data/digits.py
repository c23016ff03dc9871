"""scikit-learn's 8x8 handwritten digits: the default real data set, available offline.

1,797 real images of 10 classes, 16 grey levels. The fixed split holds out 360 images
(the split used by the robust-aggregation and edge-case specs), leaving 1,437 for training.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from flower_suite.data.dataset import ArrayDataset, train_test_split

DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0


DIGITS_COUNT = 1797


def load_digits_dataset() -> ArrayDataset:
    """All 1,797 digits as (N, 1, 8, 8) float32 in [0, 1] with int64 labels."""
    raw = _read_packaged_csv()
    if raw is None:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images, target = bunch.images.reshape(len(bunch.images), 64), bunch.target
    else:
        images, target = raw
    x = (images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return ArrayDataset(x=x, y=target.astype(np.int64), num_classes=10, name="digits")


def _read_packaged_csv() -> tuple[np.ndarray, np.ndarray] | None:
    """The digits straight from the CSV that scikit-learn ships (what ``load_digits`` reads),
    without importing scikit-learn, whose import costs ~2 s of every command's start-up.
    None when the file is not where scikit-learn keeps it or not as expected; the caller then
    uses ``load_digits`` itself (a test checks both give identical arrays)."""
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    path = root / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        return None
    table = np.loadtxt(path, delimiter=",")
    if table.shape != (DIGITS_COUNT, 65) or not np.all((table >= 0) & (table <= 16)):
        return None
    return table[:, :64], table[:, 64].astype(np.int64)


def load_digits_split(
    test_size: int = DIGITS_TEST_SIZE, seed: int = DIGITS_SPLIT_SEED
) -> tuple[ArrayDataset, ArrayDataset]:
    """The fixed train/test split (1,437 / 360 by default); the same on every machine."""
    return train_test_split(load_digits_dataset(), test_size, seed)
