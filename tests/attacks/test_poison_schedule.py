"""Data poisons (black-box mix, label flipping) and participation schedules."""

from __future__ import annotations

import numpy as np
import pytest

from flower_suite.attacks import (
    DATA_POISONS,
    FixedFrequency,
    FixedPool,
    flip_labels,
    mix_poison,
    mix_sizes,
    sample_participants,
)
from flower_suite.data import ArrayDataset


def _data(n: int, label: int, value: float) -> ArrayDataset:
    return ArrayDataset(np.full((n, 1, 2, 2), value, np.float32), np.full(n, label), 10)


def test_mix_poison_ratio_is_the_edge_fraction() -> None:
    """ratio = |edge| / |D'|; spec digits benchmark: 40 edge + 40 clean."""
    clean, edge = _data(70, 3, 0.0), _data(135, 1, 1.0)
    mixed = mix_poison(clean, edge, 0.5, seed=0, size=80)
    n_edge = int((mixed.x[:, 0, 0, 0] == 1.0).sum())
    assert (len(mixed), n_edge) == (80, 40)
    assert (mixed.y[mixed.x[:, 0, 0, 0] == 1.0] == 1).all()
    # Default size: the largest mix that fits (here limited by 70 clean at 50%).
    assert mix_sizes(70, 135, 0.5) == (70, 70)
    assert mix_sizes(100, 66, 66 / 166) == (66, 100)
    assert len(mix_poison(clean, edge, 1.0, seed=0)) == 135
    np.testing.assert_array_equal(
        mix_poison(clean, edge, 0.3, 5).y, mix_poison(clean, edge, 0.3, 5).y
    )


@pytest.mark.parametrize("ratio", [-0.1, 1.1, float("nan")])
def test_mix_poison_rejects_bad_ratio(ratio: float) -> None:
    with pytest.raises(ValueError, match=r"mixing ratio must be in \[0, 1\]"):
        mix_poison(_data(5, 0, 0.0), _data(5, 1, 1.0), ratio)
    with pytest.raises(ValueError, match="mixing ratio"):
        DATA_POISONS.create("edge_mix", edge=_data(5, 1, 1.0), ratio=ratio)


def test_mix_poison_refuses_more_than_available() -> None:
    with pytest.raises(ValueError, match="needs more than"):
        mix_poison(_data(10, 0, 0.0), _data(5, 1, 1.0), 0.5, size=20)


def test_flip_labels_default_and_mapping() -> None:
    data = ArrayDataset(np.zeros((4, 1), np.float32), np.array([0, 1, 7, 9]), 10)
    assert flip_labels(data).y.tolist() == [9, 8, 2, 0]
    assert flip_labels(data, {7: 1}).y.tolist() == [0, 1, 1, 9]
    assert DATA_POISONS.create("label_flip")(data, 0).y.tolist() == [9, 8, 2, 0]
    with pytest.raises(ValueError, match="outside"):
        flip_labels(data, {7: 10})


def test_fixed_frequency_rounds_and_sampling() -> None:
    """Period N: exactly the attacker in rounds t = 0 (mod N), plus m-1 honest clients."""
    schedule = FixedFrequency([4], every_k=5)
    assert [t for t in range(1, 21) if schedule.is_active(4, t)] == [5, 10, 15, 20]
    assert not schedule.is_active(3, 5)
    warm = FixedFrequency([4], every_k=1, start_round=21)
    assert not warm.is_active(4, 20) and warm.is_active(4, 21) and warm.is_active(4, 22)
    rng = np.random.default_rng(0)
    for t in range(1, 21):
        sample = sample_participants(schedule, 20, 10, t, rng)
        assert len(sample) == 10 and len(set(sample)) == 10
        assert (4 in sample) == (t % 5 == 0)
    with pytest.raises(ValueError, match="every_k"):
        FixedFrequency([1], every_k=0)


def test_fixed_pool_attackers_per_round() -> None:
    """2,000 rounds: mean attackers per round = m |pool| / K within 10%; some rounds >= 2."""
    pool = FixedPool.random(num_partitions=20, pool_size=3, seed=0)
    assert len(pool.attacker_partitions) == 3
    rng = np.random.default_rng(1)
    counts = [
        len(pool.attacker_partitions & set(sample_participants(pool, 20, 10, t, rng)))
        for t in range(1, 2001)
    ]
    assert np.mean(counts) == pytest.approx(10 * 3 / 20, rel=0.1)
    assert max(counts) >= 2
    assert all(pool.is_active(p, 1) for p in pool.attacker_partitions)
    assert not FixedPool([1], start_round=5).is_active(1, 4)
    with pytest.raises(ValueError, match="partition ids"):
        FixedPool([-1])
