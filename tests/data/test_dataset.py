"""Tests for ``flower_suite.data.dataset``: ArrayDataset validation, subset and the split."""

from __future__ import annotations

import numpy as np
import pytest

from flower_suite.data.dataset import ArrayDataset, train_test_split


def _toy(n: int = 20, num_classes: int = 4, with_groups: bool = False) -> ArrayDataset:
    """A small valid data set whose features encode the sample index (x[i] == i)."""
    x = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), dtype=np.float32)
    y = np.arange(n, dtype=np.int64) % num_classes
    groups = (np.arange(n, dtype=np.int64) // 5) if with_groups else None
    return ArrayDataset(x=x, y=y, num_classes=num_classes, name="toy", groups=groups)


# ----------------------------------------------------------------------------- validation


def test_valid_dataset_reports_length_and_label_counts() -> None:
    """A valid data set has ``len`` equal to its sample count and per-class counts."""
    # Prepare / Execute
    data = _toy(n=10, num_classes=4)

    # Assert
    assert len(data) == 10
    np.testing.assert_array_equal(data.label_counts(), [3, 3, 2, 2])


def test_label_counts_include_absent_classes() -> None:
    """``label_counts`` has one entry per class, including classes with no samples."""
    data = ArrayDataset(
        x=np.zeros((3, 2), np.float32), y=np.array([1, 1, 1]), num_classes=5, name="d"
    )

    np.testing.assert_array_equal(data.label_counts(), [0, 3, 0, 0, 0])


def test_length_mismatch_is_rejected() -> None:
    """Features and labels with different sample counts raise a ValueError naming both."""
    with pytest.raises(ValueError, match="5 samples but 4 labels"):
        ArrayDataset(x=np.zeros((5, 2), np.float32), y=np.zeros(4, np.int64), num_classes=2)


def test_float_labels_are_rejected() -> None:
    """Non-integer labels raise a ValueError."""
    with pytest.raises(ValueError, match="integer"):
        ArrayDataset(x=np.zeros((3, 2), np.float32), y=np.zeros(3, np.float32), num_classes=2)


def test_two_dimensional_labels_are_rejected() -> None:
    """Labels must be 1-D; a column vector of labels is refused."""
    with pytest.raises(ValueError, match="1-D"):
        ArrayDataset(x=np.zeros((3, 2), np.float32), y=np.zeros((3, 1), np.int64), num_classes=2)


@pytest.mark.parametrize("bad_label", [-1, 3])
def test_labels_outside_class_range_are_rejected(bad_label: int) -> None:
    """A label below 0 or at/above ``num_classes`` raises a ValueError."""
    y = np.array([0, 1, bad_label], dtype=np.int64)

    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        ArrayDataset(x=np.zeros((3, 2), np.float32), y=y, num_classes=3)


def test_label_equal_to_last_class_is_accepted() -> None:
    """The largest valid label is ``num_classes - 1``."""
    data = ArrayDataset(x=np.zeros((2, 2), np.float32), y=np.array([0, 2], np.int64), num_classes=3)

    assert data.label_counts()[2] == 1


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_features_are_rejected(bad_value: float) -> None:
    """NaN or infinite float features raise a ValueError."""
    x = np.zeros((3, 2), np.float32)
    x[1, 0] = bad_value

    with pytest.raises(ValueError, match="NaN or Inf"):
        ArrayDataset(x=x, y=np.zeros(3, np.int64), num_classes=2)


def test_integer_features_are_accepted() -> None:
    """Integer features (e.g. token ids) skip the finiteness check and are accepted."""
    data = ArrayDataset(
        x=np.arange(6, dtype=np.int64).reshape(3, 2), y=np.zeros(3, np.int64), num_classes=1
    )

    assert data.x.dtype == np.int64
    assert len(data) == 3


def test_groups_length_mismatch_is_rejected() -> None:
    """``groups`` must have exactly one entry per sample."""
    with pytest.raises(ValueError, match="groups"):
        ArrayDataset(
            x=np.zeros((4, 2), np.float32),
            y=np.zeros(4, np.int64),
            num_classes=1,
            groups=np.zeros(3, np.int64),
        )


def test_empty_dataset_is_valid() -> None:
    """An empty data set (no samples) is accepted and has length 0."""
    data = ArrayDataset(x=np.zeros((0, 2), np.float32), y=np.zeros(0, np.int64), num_classes=3)

    assert len(data) == 0
    np.testing.assert_array_equal(data.label_counts(), [0, 0, 0])


# --------------------------------------------------------------------------------- subset


def test_subset_selects_the_requested_samples_in_order() -> None:
    """``subset`` returns the samples at the given indices, in the given order."""
    # Prepare
    data = _toy(with_groups=True)
    idx = np.array([7, 2, 19])

    # Execute
    sub = data.subset(idx)

    # Assert
    np.testing.assert_array_equal(sub.x[:, 0], [7.0, 2.0, 19.0])
    np.testing.assert_array_equal(sub.y, data.y[idx])
    assert sub.groups is not None
    np.testing.assert_array_equal(sub.groups, data.groups[idx])
    assert sub.num_classes == data.num_classes
    assert sub.name == data.name


def test_subset_accepts_a_python_list() -> None:
    """Indices given as a plain list work like an array."""
    data = _toy()

    sub = data.subset([0, 3])

    np.testing.assert_array_equal(sub.x[:, 0], [0.0, 3.0])


def test_subset_without_groups_keeps_groups_none() -> None:
    """A data set without groups yields subsets without groups."""
    assert _toy().subset(np.array([1, 2])).groups is None


def test_subset_is_a_copy_that_does_not_alias_the_original() -> None:
    """Writing into a subset's arrays leaves the original data set untouched."""
    # Prepare
    data = _toy(with_groups=True)
    x_before, y_before = data.x.copy(), data.y.copy()
    g_before = data.groups.copy()

    # Execute
    sub = data.subset(np.arange(5))
    sub.x[:] = -1.0
    sub.y[:] = 0
    sub.groups[:] = 99

    # Assert
    assert not np.shares_memory(sub.x, data.x)
    assert not np.shares_memory(sub.y, data.y)
    np.testing.assert_array_equal(data.x, x_before)
    np.testing.assert_array_equal(data.y, y_before)
    np.testing.assert_array_equal(data.groups, g_before)


# ----------------------------------------------------------------------- train_test_split


def test_split_sizes_with_count() -> None:
    """An integer ``test_size`` holds out exactly that many samples."""
    train, test = train_test_split(_toy(n=20), 6, seed=0)

    assert len(train) == 14
    assert len(test) == 6


def test_split_sizes_with_fraction() -> None:
    """A float ``test_size`` is a fraction of the data, rounded to the nearest count."""
    train, test = train_test_split(_toy(n=20), 0.25, seed=0)

    assert (len(train), len(test)) == (15, 5)


def test_split_is_disjoint_and_covers_all_samples() -> None:
    """Train and test share no sample and together contain every sample exactly once."""
    # Prepare
    data = _toy(n=20)

    # Execute
    train, test = train_test_split(data, 7, seed=3)

    # Assert: features encode the original index.
    train_ids = set(train.x[:, 0].astype(int).tolist())
    test_ids = set(test.x[:, 0].astype(int).tolist())
    assert train_ids.isdisjoint(test_ids)
    assert train_ids | test_ids == set(range(20))
    # Labels travel with their features.
    np.testing.assert_array_equal(train.y, train.x[:, 0].astype(int) % data.num_classes)


def test_split_is_deterministic_under_seed() -> None:
    """The same seed gives identical splits; a different seed a different one."""
    data = _toy(n=50)

    a_train, a_test = train_test_split(data, 10, seed=11)
    b_train, b_test = train_test_split(data, 10, seed=11)
    _, c_test = train_test_split(data, 10, seed=12)

    np.testing.assert_array_equal(a_train.x, b_train.x)
    np.testing.assert_array_equal(a_test.x, b_test.x)
    assert not np.array_equal(a_test.x, c_test.x)


@pytest.mark.parametrize("test_size", [0, 20, 25, 0.0, 1.0, 0.01])
def test_split_refuses_an_empty_side(test_size: int | float) -> None:
    """A ``test_size`` that would leave train or test empty raises a ValueError."""
    with pytest.raises(ValueError, match="empty split"):
        train_test_split(_toy(n=20), test_size, seed=0)
