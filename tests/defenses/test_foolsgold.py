"""FoolsGold: weights against the loop reference, sybils, and node-id-keyed histories."""

from __future__ import annotations

import defense_reference as ref
import numpy as np
import pytest
import torch

from flower_suite.defenses import FoolsGoldHistory, foolsgold, foolsgold_weights


def _clients(n_honest: int, n_sybil: int, d: int = 30, seed: int = 0) -> torch.Tensor:
    """Diverse honest histories and sybils sharing one direction (plus tiny noise)."""
    gen = torch.Generator().manual_seed(seed)
    honest = torch.randn(n_honest, d, generator=gen, dtype=torch.float64)
    target = torch.randn(d, generator=gen, dtype=torch.float64)
    sybils = target + 1e-3 * torch.randn(n_sybil, d, generator=gen, dtype=torch.float64)
    return torch.cat([honest, sybils])


@pytest.mark.parametrize("kappa", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("seed", range(3))
def test_weights_match_reference(kappa: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    history = _clients(5, 3, seed=seed)
    # Correlated honest pairs exercise the pardoning step.
    history[1] = history[0] + 0.5 * torch.randn(30, generator=gen, dtype=torch.float64)
    history[2] = 0.7 * history[5] + torch.randn(30, generator=gen, dtype=torch.float64)
    ours = foolsgold_weights(history, kappa=kappa).numpy()
    np.testing.assert_allclose(ours, ref.foolsgold_weights(history.numpy(), kappa), atol=1e-12)
    assert ((ours >= 0) & (ours <= 1)).all()


def test_sybils_get_zero_weight_and_diverse_honest_clients_keep_theirs() -> None:
    history = _clients(6, 3, d=200)
    alpha = foolsgold_weights(history)
    assert (alpha[6:] < 1e-6).all()
    assert (alpha[:6] > 0.5).all()


def test_identical_sybils_alone_all_get_zero() -> None:
    history = torch.ones(4, 5)
    assert foolsgold_weights(history).tolist() == [0.0] * 4
    result = foolsgold(history)
    assert torch.equal(result.aggregate, torch.zeros(5))
    assert result.selected == () and result.info["zero-weight"] == 4


def test_single_client_keeps_weight_one() -> None:
    assert foolsgold_weights(torch.ones(1, 3)).tolist() == [1.0]


def test_weights_are_permutation_equivariant() -> None:
    """Reordering clients permutes their weights: nothing depends on list positions."""
    history = _clients(5, 3)
    perm = torch.tensor([7, 2, 0, 5, 1, 6, 3, 4])
    torch.testing.assert_close(
        foolsgold_weights(history[perm]), foolsgold_weights(history)[perm], rtol=0, atol=1e-12
    )


def test_history_is_keyed_by_node_id_under_reordering_and_partial_participation() -> None:
    """Round 1: nodes 10, 20, 30; round 2: nodes 30 and 10 (in that order), 20 absent."""
    gen = torch.Generator().manual_seed(0)
    r1 = torch.randn(3, 4, generator=gen)
    r2 = torch.randn(2, 4, generator=gen)
    history = FoolsGoldHistory()
    history.update([10, 20, 30], r1)
    history.update([30, 10], r2)
    expected = {10: r1[0] + r2[1], 20: r1[1], 30: r1[2] + r2[0]}
    for node, value in expected.items():
        torch.testing.assert_close(history.matrix([node])[0], value.double())
    assert history.node_ids == [10, 20, 30]
    assert (history.rounds(10), history.rounds(20), history.rounds(99)) == (2, 1, 0)
    # The same updates fed in another order give the same per-node histories.
    other = FoolsGoldHistory()
    other.update([30, 10, 20], r1[[2, 0, 1]])
    other.update([10, 30], r2[[1, 0]])
    torch.testing.assert_close(other.matrix([10, 20, 30]), history.matrix([10, 20, 30]))


def test_aggregate_is_the_alpha_weighted_mean_and_ignores_sample_counts() -> None:
    updates = _clients(4, 2, d=50)
    alpha = foolsgold_weights(updates)
    expected = (alpha[:, None] * updates).sum(dim=0) / alpha.sum()
    result = foolsgold(updates, torch.tensor([1.0, 1.0, 1.0, 1.0, 1e6, 1e6]))
    torch.testing.assert_close(result.aggregate, expected, rtol=1e-12, atol=1e-14)
    assert set(result.selected) == set(range(4))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: foolsgold_weights(torch.ones(3, 2), kappa=0.0), "kappa"),
        (lambda: foolsgold_weights(torch.tensor([[1.0, float("nan")]])), "NaN"),
        (lambda: foolsgold(torch.ones(3, 2), history=torch.ones(2, 2)), "history"),
        (lambda: FoolsGoldHistory().update([1, 1], torch.ones(2, 2)), "distinct"),
        (lambda: FoolsGoldHistory().update([1], torch.ones(2, 2)), "distinct"),
    ],
)
def test_bad_inputs_raise(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_history_refuses_other_sizes_and_unknown_nodes() -> None:
    history = FoolsGoldHistory()
    history.update([1], torch.ones(1, 3))
    with pytest.raises(ValueError, match="size"):
        history.update([2], torch.ones(1, 4))
    with pytest.raises(KeyError, match="2"):
        history.matrix([1, 2])
