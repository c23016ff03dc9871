"""Krum and Multi-Krum: spec section 5 check 1 and the neighbour convention (n - f - 2)."""

from __future__ import annotations

import pytest
import torch

from flower_suite.aggregation import krum, krum_scores, multi_krum, pairwise_sq_distances


def _honest_and_byzantine(seed: int, n: int = 10, f: int = 2, d: int = 50):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    byzantine = [3, 7][:f] if f <= 2 else list(range(n - f, n))
    x[byzantine] += 10.0  # N(10, I)
    honest = [i for i in range(n) if i not in byzantine]
    return x, honest


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spec_check_1_krum_and_multi_krum_pick_honest(seed: int) -> None:
    # prepare
    x, honest = _honest_and_byzantine(seed)
    # execute
    k = krum(x, num_malicious_nodes=2)
    mk = multi_krum(x, num_malicious_nodes=2)  # m = n - f = 8
    mk1 = multi_krum(x, num_malicious_nodes=2, num_nodes_to_select=1)
    # assert
    assert k.selected[0] in honest
    assert torch.equal(k.aggregate, x[k.selected[0]])
    assert mk.selected == tuple(honest)
    assert torch.allclose(mk.aggregate, x[honest].mean(dim=0), rtol=0, atol=1e-12)
    assert mk1.selected == k.selected
    assert torch.equal(mk1.aggregate, k.aggregate)


def test_spec_check_1_multi_krum_all_with_f0_is_mean() -> None:
    # prepare
    x, _ = _honest_and_byzantine(0)
    w = torch.arange(1.0, 11.0, dtype=torch.float64)
    # execute
    plain = multi_krum(x, num_malicious_nodes=0, num_nodes_to_select=10).aggregate
    weighted = multi_krum(x, w, num_malicious_nodes=0, num_nodes_to_select=10).aggregate
    # assert
    assert (plain - x.mean(dim=0)).abs().max() <= 1e-12
    expected = (w[:, None] * x).sum(dim=0) / w.sum()
    assert (weighted - expected).abs().max() <= 1e-12


def test_neighbour_convention_is_n_minus_f_minus_2_by_hand() -> None:
    # prepare: 1-D points 0, 1, 3, 6, 10 with n=5, f=1 -> 2 neighbours by default.
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0], [10.0]])
    # Squared distances, nearest two others: 0:{1,9}=10, 1:{1,4}=5, 3:{4,9}=13, 6:{9,16}=25,
    # 10:{16,49}=65. With n-f-1 = 3 neighbours: 46, 30, 22, 50, 146.
    # execute
    default = krum(x, num_malicious_nodes=1)
    byzfl = krum(x, num_malicious_nodes=1, num_neighbours=3)
    scores2 = krum_scores(pairwise_sq_distances(x), 2)
    scores3 = krum_scores(pairwise_sq_distances(x), 3)
    # assert
    assert scores2.tolist() == [10.0, 5.0, 13.0, 25.0, 65.0]
    assert scores3.tolist() == [46.0, 30.0, 22.0, 50.0, 146.0]
    assert default.selected == (1,) and default.info["score"] == 5.0
    assert byzfl.selected == (2,) and byzfl.info["score"] == 22.0


def test_krum_scores_exclude_the_diagonal_explicitly() -> None:
    # prepare: a poisoned diagonal must not enter the score.
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0], [10.0]])
    dist = pairwise_sq_distances(x)
    poisoned = dist.clone()
    poisoned.fill_diagonal_(-100.0)
    # execute / assert
    assert torch.equal(krum_scores(poisoned, 2), krum_scores(dist, 2))
    assert torch.equal(dist, pairwise_sq_distances(x))  # not modified in place


@pytest.mark.parametrize("values", [[0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 1.0, 0.0]])
def test_ties_go_to_the_lowest_index(values: list[float]) -> None:
    # prepare: two pairs of duplicates; with 2 neighbours every score is exactly 1.
    x = torch.tensor(values)[:, None]
    # execute
    scores = krum_scores(pairwise_sq_distances(x), 2)
    k = krum(x, num_malicious_nodes=0)
    mk = multi_krum(x, num_malicious_nodes=0, num_nodes_to_select=2)
    # assert
    assert scores.tolist() == [1.0, 1.0, 1.0, 1.0]
    assert k.selected == (0,)
    assert mk.selected == (0, 1)


def test_krum_keeps_dtype_and_returns_a_copy() -> None:
    # prepare
    x, _ = _honest_and_byzantine(0)
    x32 = x.float()
    # execute
    out = krum(x32, num_malicious_nodes=2).aggregate
    out.add_(1.0)
    # assert
    assert out.dtype == torch.float32
    assert torch.equal(x32, x.float())


def test_multi_krum_weights_only_over_the_selected() -> None:
    # prepare: the Byzantine rows carry huge weights but are not selected.
    x, honest = _honest_and_byzantine(1)
    w = torch.ones(10, dtype=torch.float64)
    w[[3, 7]] = 1e6
    w[honest[0]] = 3.0
    # execute
    out = multi_krum(x, w, num_malicious_nodes=2).aggregate
    # assert
    hw = w[honest]
    expected = (hw[:, None] * x[honest]).sum(dim=0) / hw.sum()
    assert (out - expected).abs().max() <= 1e-12


def test_multi_krum_zero_weight_selection_raises() -> None:
    x, _ = _honest_and_byzantine(2)
    w = torch.zeros(10, dtype=torch.float64)
    w[[3, 7]] = 1.0
    with pytest.raises(ValueError, match=r"multi_krum.*zero total weight"):
        multi_krum(x, w, num_malicious_nodes=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_malicious_nodes": 4}, r"krum requires n >= 2f\+3 \(got n=10, f=4\)"),
        ({"num_malicious_nodes": -1}, "krum"),
        ({"num_malicious_nodes": 1, "num_neighbours": 0}, "krum: num_neighbours"),
        ({"num_malicious_nodes": 1, "num_neighbours": 10}, "krum: num_neighbours"),
    ],
)
def test_krum_preconditions(kwargs: dict[str, int], match: str) -> None:
    x, _ = _honest_and_byzantine(0)
    with pytest.raises(ValueError, match=match):
        krum(x, **kwargs)


@pytest.mark.parametrize("m", [0, 11])
def test_multi_krum_selection_size_is_validated(m: int) -> None:
    x, _ = _honest_and_byzantine(0)
    with pytest.raises(ValueError, match="multi_krum: num_nodes_to_select"):
        multi_krum(x, num_malicious_nodes=2, num_nodes_to_select=m)
