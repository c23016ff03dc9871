"""Tests for ``flower_suite.data.digits``: the fixed offline 8x8 digits split."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from flower_suite.data.dataset import ArrayDataset
from flower_suite.data.digits import _read_packaged_csv, load_digits_dataset, load_digits_split


@pytest.fixture(scope="module")
def split() -> tuple[ArrayDataset, ArrayDataset]:
    """The default digits split, loaded once for the module."""
    return load_digits_split()


def _row_counter(data: ArrayDataset) -> Counter[bytes]:
    """A multiset of (image bytes + label) rows."""
    return Counter(x.tobytes() + bytes([int(y)]) for x, y in zip(data.x, data.y, strict=True))


def test_full_dataset_shape_and_range() -> None:
    """All 1,797 digits load as (N, 1, 8, 8) float32 in [0, 1] with int64 labels."""
    data = load_digits_dataset()

    assert data.x.shape == (1797, 1, 8, 8)
    assert data.x.dtype == np.float32
    assert data.y.dtype == np.int64
    assert data.num_classes == 10
    assert data.x.min() == 0.0
    assert data.x.max() == 1.0  # 16 grey levels / 16


def test_split_sizes(split: tuple[ArrayDataset, ArrayDataset]) -> None:
    """The default split holds 1,437 training and 360 test images."""
    train, test = split

    assert len(train) == 1437
    assert len(test) == 360


@pytest.mark.parametrize("side", [0, 1])
def test_split_shapes_dtype_and_range(split: tuple[ArrayDataset, ArrayDataset], side: int) -> None:
    """Both sides are (N, 1, 8, 8) float32 with every value in [0, 1]."""
    data = split[side]

    assert data.x.shape[1:] == (1, 8, 8)
    assert data.x.dtype == np.float32
    assert float(data.x.min()) >= 0.0
    assert float(data.x.max()) <= 1.0
    assert data.y.dtype == np.int64


def test_split_is_disjoint_by_rows(split: tuple[ArrayDataset, ArrayDataset]) -> None:
    """No image appears in both train and test (compared row by row)."""
    train, test = split

    train_rows = {x.tobytes() for x in train.x}
    test_rows = {x.tobytes() for x in test.x}

    assert train_rows.isdisjoint(test_rows)


def test_split_is_a_partition_of_the_full_dataset(
    split: tuple[ArrayDataset, ArrayDataset],
) -> None:
    """Train plus test is exactly the full data set (as a multiset of image+label rows)."""
    train, test = split

    assert _row_counter(train) + _row_counter(test) == _row_counter(load_digits_dataset())


def test_split_is_identical_across_calls(split: tuple[ArrayDataset, ArrayDataset]) -> None:
    """Two calls return bit-identical splits."""
    train_a, test_a = split
    train_b, test_b = load_digits_split()

    np.testing.assert_array_equal(train_a.x, train_b.x)
    np.testing.assert_array_equal(train_a.y, train_b.y)
    np.testing.assert_array_equal(test_a.x, test_b.x)
    np.testing.assert_array_equal(test_a.y, test_b.y)


def test_all_classes_present_in_both_splits(split: tuple[ArrayDataset, ArrayDataset]) -> None:
    """Every one of the 10 digit classes occurs in train and in test."""
    train, test = split

    assert set(np.unique(train.y).tolist()) == set(range(10))
    assert set(np.unique(test.y).tolist()) == set(range(10))


def test_other_seed_gives_another_split() -> None:
    """A different split seed changes which images are held out."""
    _, test_default = load_digits_split()
    _, test_other = load_digits_split(seed=1)

    assert len(test_other) == 360
    assert {x.tobytes() for x in test_default.x} != {x.tobytes() for x in test_other.x}


def test_packaged_csv_reader_equals_scikit_learns_loader() -> None:
    """The start-up shortcut (reading scikit-learn's CSV without importing scikit-learn) gives
    exactly what ``sklearn.datasets.load_digits`` gives."""
    from sklearn.datasets import load_digits

    raw = _read_packaged_csv()
    assert raw is not None, "scikit-learn's digits.csv.gz not found: the shortcut is unused"
    images, target = raw
    bunch = load_digits()
    np.testing.assert_array_equal(images, bunch.images.reshape(-1, 64))
    np.testing.assert_array_equal(target, bunch.target)
    full = load_digits_dataset()
    np.testing.assert_array_equal(full.x, (bunch.images.astype(np.float32) / 16.0)[:, None])
