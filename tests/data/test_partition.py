"""Tests for ``flower_suite.data.partition`` on the real digits training split."""

from __future__ import annotations

import numpy as np
import pytest

from flower_suite.data.dataset import ArrayDataset
from flower_suite.data.digits import load_digits_split
from flower_suite.data.partition import (
    PartitionSpec,
    format_histograms,
    label_histograms,
    partition_indices,
)

NUM_CLIENTS = 10
LABEL_SCHEMES = ("iid", "dirichlet", "pathological")


@pytest.fixture(scope="module")
def train() -> ArrayDataset:
    """The 1,437-image digits training split."""
    return load_digits_split()[0]


@pytest.fixture(scope="module")
def parts_by_scheme(train: ArrayDataset) -> dict[str, list[np.ndarray]]:
    """Ten partitions of the training split for each label-based scheme (seed 0)."""
    return {
        scheme: partition_indices(train, NUM_CLIENTS, PartitionSpec(scheme=scheme, seed=0))
        for scheme in LABEL_SCHEMES
    }


def _grouped(groups: list[int]) -> ArrayDataset:
    """A small data set whose ``groups`` column is ``groups``; x[i] encodes index i."""
    n = len(groups)
    return ArrayDataset(
        x=np.arange(n, dtype=np.float32)[:, None],
        y=np.arange(n, dtype=np.int64) % 3,
        num_classes=3,
        name="grouped",
        groups=np.asarray(groups, dtype=np.int64),
    )


def _max_class_share(hist: np.ndarray) -> float:
    """Mean over clients of the largest fraction of one class in that client's data."""
    return float(np.mean(hist.max(axis=1) / hist.sum(axis=1)))


# ------------------------------------------------------------------ common to every scheme


@pytest.mark.parametrize("scheme", LABEL_SCHEMES)
def test_partitions_are_sorted_nonempty_and_disjoint(
    parts_by_scheme: dict[str, list[np.ndarray]], train: ArrayDataset, scheme: str
) -> None:
    """Each client gets a sorted, non-empty index array; no index goes to two clients."""
    parts = parts_by_scheme[scheme]

    assert len(parts) == NUM_CLIENTS
    for p in parts:
        assert p.dtype == np.int64
        assert len(p) > 0
        assert np.all(np.diff(p) > 0)  # sorted, no duplicates within a client
        assert p.min() >= 0
        assert p.max() < len(train)
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_partitions_cover_the_whole_set(
    parts_by_scheme: dict[str, list[np.ndarray]], train: ArrayDataset, scheme: str
) -> None:
    """IID and Dirichlet partitions together hold every training index exactly once."""
    parts = parts_by_scheme[scheme]

    joined = np.concatenate(parts)
    assert len(joined) == len(train)
    assert set(joined.tolist()) == set(range(len(train)))


@pytest.mark.parametrize("scheme", LABEL_SCHEMES)
def test_same_seed_gives_identical_partitions(
    parts_by_scheme: dict[str, list[np.ndarray]], train: ArrayDataset, scheme: str
) -> None:
    """Partitioning twice with the same seed gives identical index arrays."""
    again = partition_indices(train, NUM_CLIENTS, PartitionSpec(scheme=scheme, seed=0))

    for a, b in zip(parts_by_scheme[scheme], again, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_different_seed_gives_different_partitions(
    parts_by_scheme: dict[str, list[np.ndarray]], train: ArrayDataset, scheme: str
) -> None:
    """A different seed changes the IID shuffle and the Dirichlet proportions."""
    other = partition_indices(train, NUM_CLIENTS, PartitionSpec(scheme=scheme, seed=1))

    same = all(np.array_equal(a, b) for a, b in zip(parts_by_scheme[scheme], other, strict=True))
    assert not same


# --------------------------------------------------------------------------- per scheme


def test_iid_sizes_differ_by_at_most_one(
    parts_by_scheme: dict[str, list[np.ndarray]], train: ArrayDataset
) -> None:
    """IID shards are balanced: 1,437 over 10 clients gives sizes 143 or 144."""
    sizes = [len(p) for p in parts_by_scheme["iid"]]

    assert max(sizes) - min(sizes) <= 1
    assert sum(sizes) == len(train)
    assert set(sizes) <= {143, 144}


def test_iid_is_shuffled_not_contiguous(parts_by_scheme: dict[str, list[np.ndarray]]) -> None:
    """The IID scheme shuffles before sharding, so client 0 is not simply indices 0..143."""
    first = parts_by_scheme["iid"][0]

    assert not np.array_equal(first, np.arange(len(first)))


@pytest.mark.parametrize("classes_per_client", [1, 2, 3])
def test_pathological_limits_classes_per_client(
    train: ArrayDataset, classes_per_client: int
) -> None:
    """Each pathological client sees at most ``classes_per_client`` distinct labels."""
    spec = PartitionSpec(scheme="pathological", classes_per_client=classes_per_client, seed=0)

    parts = partition_indices(train, NUM_CLIENTS, spec)

    for p in parts:
        assert 1 <= len(np.unique(train.y[p])) <= classes_per_client
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined)


def test_dirichlet_small_alpha_is_more_skewed(train: ArrayDataset) -> None:
    """Alpha 0.1 concentrates clients on few classes far more than alpha 100 does."""
    # Prepare / Execute
    skewed = partition_indices(
        train, NUM_CLIENTS, PartitionSpec(scheme="dirichlet", alpha=0.1, seed=0)
    )
    balanced = partition_indices(
        train, NUM_CLIENTS, PartitionSpec(scheme="dirichlet", alpha=100.0, seed=0)
    )

    # Assert
    share_skewed = _max_class_share(label_histograms(train, skewed))
    share_balanced = _max_class_share(label_histograms(train, balanced))
    assert share_skewed > share_balanced + 0.2
    # Alpha 100 is close to the global class mix (about 0.1 per class for digits).
    assert share_balanced < 0.25


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_dirichlet_unreachable_min_partition_size(train: ArrayDataset) -> None:
    """A minimum client size no split can meet raises a ValueError naming the scheme."""
    spec = PartitionSpec(scheme="dirichlet", alpha=0.5, min_partition_size=200, seed=0)

    with pytest.raises(ValueError, match=r"partition\.scheme='dirichlet' failed"):
        partition_indices(train, NUM_CLIENTS, spec)


# ------------------------------------------------------------------------------- natural


def test_natural_returns_whole_groups() -> None:
    """Each natural client is exactly all the indices of one distinct group."""
    # Prepare
    groups = [5, 2, 5, 9, 2, 5, 7, 7, 9, 5]
    data = _grouped(groups)
    g = np.asarray(groups)

    for seed in range(4):
        # Execute
        parts = partition_indices(data, 2, PartitionSpec(scheme="natural", seed=seed))

        # Assert
        assert len(parts) == 2
        owners = []
        for p in parts:
            owner_values = np.unique(g[p])
            assert len(owner_values) == 1
            owner = int(owner_values[0])
            np.testing.assert_array_equal(p, np.flatnonzero(g == owner))
            owners.append(owner)
        assert len(set(owners)) == 2


def test_natural_with_all_groups_covers_everything() -> None:
    """Asking for as many clients as groups yields every group once, covering all samples."""
    groups = [5, 2, 5, 9, 2, 5, 7, 7, 9, 5]
    data = _grouped(groups)

    parts = partition_indices(data, 4, PartitionSpec(scheme="natural", seed=0))

    expected = {tuple(np.flatnonzero(np.asarray(groups) == v).tolist()) for v in (2, 5, 7, 9)}
    assert {tuple(p.tolist()) for p in parts} == expected


def test_natural_is_deterministic_under_seed() -> None:
    """The same seed picks the same groups."""
    data = _grouped(list(range(8)) * 2)

    a = partition_indices(data, 3, PartitionSpec(scheme="natural", seed=5))
    b = partition_indices(data, 3, PartitionSpec(scheme="natural", seed=5))

    for pa, pb in zip(a, b, strict=True):
        np.testing.assert_array_equal(pa, pb)


def test_natural_more_clients_than_groups() -> None:
    """More clients than natural owners (but fewer than samples) raises a ValueError."""
    data = _grouped([5, 2, 5, 9, 2, 5, 7, 7, 9, 5])

    with pytest.raises(ValueError, match="5 clients but grouped has only 4 natural owners"):
        partition_indices(data, 5, PartitionSpec(scheme="natural"))


def test_natural_needs_groups(train: ArrayDataset) -> None:
    """The natural scheme on a data set without groups raises a ValueError."""
    assert train.groups is None

    with pytest.raises(ValueError, match="natural owners"):
        partition_indices(train, 2, PartitionSpec(scheme="natural"))


# -------------------------------------------------------------------------------- errors


def test_pathological_more_classes_than_present(train: ArrayDataset) -> None:
    """``classes_per_client`` above the number of classes present raises a ValueError."""
    # Prepare: keep only classes 0, 1 and 2.
    three_classes = train.subset(np.flatnonzero(train.y < 3))
    spec = PartitionSpec(scheme="pathological", classes_per_client=4)

    # Execute / Assert
    with pytest.raises(ValueError, match="only 3 classes"):
        partition_indices(three_classes, 2, spec)


def test_pathological_more_classes_than_exist(train: ArrayDataset) -> None:
    """On full digits, 11 classes per client is impossible."""
    spec = PartitionSpec(scheme="pathological", classes_per_client=11)

    with pytest.raises(ValueError, match="only 10 classes"):
        partition_indices(train, NUM_CLIENTS, spec)


@pytest.mark.parametrize("scheme", LABEL_SCHEMES)
def test_more_partitions_than_samples(train: ArrayDataset, scheme: str) -> None:
    """More clients than samples raises a ValueError for every scheme."""
    tiny = train.subset(np.arange(5))

    with pytest.raises(ValueError, match="6 partitions but only 5 samples"):
        partition_indices(tiny, 6, PartitionSpec(scheme=scheme))


@pytest.mark.parametrize("num_partitions", [0, -3])
def test_non_positive_partition_count(train: ArrayDataset, num_partitions: int) -> None:
    """Zero or negative client counts raise a ValueError."""
    with pytest.raises(ValueError, match="num_partitions must be >= 1"):
        partition_indices(train, num_partitions, PartitionSpec())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scheme": "random"}, "partition.scheme must be one of"),
        ({"scheme": "IID"}, "partition.scheme must be one of"),
        ({"alpha": 0.0}, "partition.alpha must be > 0"),
        ({"alpha": -1.0}, "partition.alpha must be > 0"),
        ({"classes_per_client": 0}, "partition.classes_per_client must be >= 1"),
    ],
)
def test_partition_spec_validation(kwargs: dict, message: str) -> None:
    """Invalid scheme, alpha or classes_per_client values are refused at construction."""
    with pytest.raises(ValueError, match=message):
        PartitionSpec(**kwargs)


def test_partition_spec_defaults() -> None:
    """The default spec is a seeded IID split."""
    spec = PartitionSpec()

    assert (spec.scheme, spec.seed) == ("iid", 0)
    assert spec.alpha > 0


# ---------------------------------------------------------------------------- histograms


@pytest.mark.parametrize("scheme", LABEL_SCHEMES)
def test_label_histograms_match_loop_reference(
    parts_by_scheme: dict[str, list[np.ndarray]], train: ArrayDataset, scheme: str
) -> None:
    """Histogram rows equal a slow per-sample count and sum to each partition's size."""
    # Prepare
    parts = parts_by_scheme[scheme]
    reference = np.zeros((len(parts), train.num_classes), dtype=np.int64)
    for client, p in enumerate(parts):
        for i in p:
            reference[client, int(train.y[i])] += 1

    # Execute
    hist = label_histograms(train, parts)

    # Assert
    assert hist.shape == (NUM_CLIENTS, 10)
    np.testing.assert_array_equal(hist, reference)
    np.testing.assert_array_equal(hist.sum(axis=1), [len(p) for p in parts])


def test_label_histograms_keep_absent_classes() -> None:
    """A client with only one class still gets a full-width row."""
    data = ArrayDataset(x=np.zeros((4, 1), np.float32), y=np.array([0, 0, 3, 3]), num_classes=5)

    hist = label_histograms(data, [np.array([0, 1]), np.array([2, 3])])

    np.testing.assert_array_equal(hist, [[2, 0, 0, 0, 0], [0, 0, 0, 2, 0]])


def test_format_histograms_contains_counts_and_totals() -> None:
    """The table has a header, one line per client, each ending in that client's total."""
    hist = np.array([[3, 0, 12], [7, 140, 1]], dtype=np.int64)

    text = format_histograms(hist)

    lines = text.splitlines()
    assert len(lines) == 3
    assert lines[0].split() == ["client", "0", "1", "2", "total"]
    assert lines[1].split() == ["0", "3", "0", "12", "15"]
    assert lines[2].split() == ["1", "7", "140", "1", "148"]


def test_format_histograms_on_real_partition(
    parts_by_scheme: dict[str, list[np.ndarray]], train: ArrayDataset
) -> None:
    """Every client's total in the formatted Dirichlet table equals its partition size."""
    parts = parts_by_scheme["dirichlet"]

    lines = format_histograms(label_histograms(train, parts)).splitlines()[1:]

    assert [int(line.split()[-1]) for line in lines] == [len(p) for p in parts]


def test_pathological_refuses_to_drop_classes() -> None:
    """2 clients x 2 classes cannot hold 10 classes: an error naming the lost classes."""
    train, _ = load_digits_split()
    spec = PartitionSpec(scheme="pathological", classes_per_client=2)
    with pytest.raises(ValueError, match=r"assigns \d+ of 1437 samples.*go to no client"):
        partition_indices(train, 2, spec)
