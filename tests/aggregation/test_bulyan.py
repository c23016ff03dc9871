"""Bulyan: spec section 5 check 2, the shrinking pool, one distance matrix, the DETOX variant."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import reference_rules as ref
import torch

from flower_suite.aggregation import bulyan, weighted_mean
from flower_suite.aggregation import distances as distances_module


def _inputs(seed: int, n: int, f: int, d: int = 50) -> tuple[torch.Tensor, list[int]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    byzantine = list(range(1, 2 * f, 2))  # interleaved with the honest rows
    x[byzantine] += 10.0
    return x, [i for i in range(n) if i not in byzantine]


def test_spec_check_2_precondition_names_4f_plus_3() -> None:
    x, _ = _inputs(0, n=10, f=2)
    with pytest.raises(ValueError, match=r"Bulyan requires n >= 4f\+3 \(got n=10, f=2\)"):
        bulyan(x, num_malicious_nodes=2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spec_check_2_bulyan_beats_the_mean(seed: int) -> None:
    # prepare
    x, honest = _inputs(seed, n=11, f=2)
    honest_mean = x[honest].mean(dim=0)
    # execute
    result = bulyan(x, num_malicious_nodes=2)
    # assert
    ours = float((result.aggregate - honest_mean).norm())
    plain = float((weighted_mean(x).aggregate - honest_mean).norm())
    assert ours < 0.5 * plain
    assert len(set(result.selected)) == len(result.selected) == 11 - 4
    assert set(result.selected[:5]) <= set(honest)  # late picks may be Byzantine (pool of 5)
    assert result.info == {"theta": 7.0, "beta": 3.0}


def test_distance_matrix_is_computed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # prepare
    calls: list[int] = []
    original = distances_module.pairwise_sq_distances

    def counting(updates: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        calls.append(updates.shape[0])
        return original(updates)

    # The package re-exports the function ``bulyan`` under the submodule's name, so fetch the
    # module itself from the import system.
    module = importlib.import_module("flower_suite.aggregation.bulyan")
    monkeypatch.setattr(module, "pairwise_sq_distances", counting)
    x, _ = _inputs(3, n=19, f=4)
    # execute
    bulyan(x, num_malicious_nodes=4)
    # assert
    assert calls == [19]


def test_selection_indices_refer_to_the_inputs_not_the_shrinking_pool() -> None:
    # prepare: outlying rows first, so pool positions and input indices disagree after a pick.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(11, 6))
    x[0] += 50.0
    x[1] -= 50.0
    # execute
    result = bulyan(torch.from_numpy(x), num_malicious_nodes=2)
    # assert
    expected_picks, expected = ref.ref_bulyan(x, 2)
    assert result.selected == expected_picks
    assert 0 not in result.selected and 1 not in result.selected
    assert len(set(result.selected)) == len(result.selected) == 7
    np.testing.assert_allclose(result.aggregate.numpy(), expected, rtol=0, atol=1e-12)


def test_coordinate_stage_averages_values_closest_to_the_median() -> None:
    # prepare: f = 1, n = 7 identical-but-for-one-coordinate rows: every row is selected in
    # turn until theta = 5; the kept values are the 3 closest to the median of the 5 picks.
    x = torch.zeros(7, 2, dtype=torch.float64)
    x[:, 1] = torch.tensor([0.0, 1.0, 2.0, 2.5, 10.0, 11.0, 12.0]) * 1e-3
    # execute
    result = bulyan(x, num_malicious_nodes=1)
    # assert
    picks = list(result.selected)
    values = sorted(float(x[i, 1]) for i in picks)
    med = values[2]
    closest = sorted(values, key=lambda v: abs(v - med))[:3]
    assert result.aggregate[0] == 0.0
    assert float(result.aggregate[1]) == pytest.approx(sum(closest) / 3, abs=1e-15)


def test_f_zero_is_the_mean() -> None:
    x, _ = _inputs(4, n=5, f=0)
    out = bulyan(x, num_malicious_nodes=0)
    assert torch.allclose(out.aggregate, x.mean(dim=0), rtol=0, atol=1e-12)
    assert sorted(out.selected) == [0, 1, 2, 3, 4]


def test_one_shot_is_the_detox_reference_variant() -> None:
    # prepare
    x, honest = _inputs(6, n=15, f=3)
    # execute
    result = bulyan(x, num_malicious_nodes=3, variant="one_shot")
    # assert: n - f - 2 = 10 lowest Krum scores, then the central 10 - 2f = 4 order statistics.
    picks, expected = ref.ref_bulyan(x.numpy(), 3, "one_shot")
    assert result.selected == picks and len(picks) == 10 and set(picks) <= set(honest)
    np.testing.assert_allclose(result.aggregate.numpy(), expected, rtol=0, atol=1e-12)
    assert result.info == {"theta": 10.0, "beta": 4.0}


def test_unknown_variant_raises() -> None:
    x, _ = _inputs(0, n=7, f=1)
    with pytest.raises(ValueError, match="bulyan: variant"):
        bulyan(x, num_malicious_nodes=1, variant="fast")  # type: ignore[arg-type]
