"""Edge-case set construction: GMM tails, the digits task, the p% split."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from flower_suite.attacks import (
    DigitsEdgeCase,
    build_edge_case_set,
    digits_edge_case,
    fit_class_gmm,
    model_logits,
    relabel,
    select_tail,
    split_edge_examples,
)
from flower_suite.data import ArrayDataset, load_digits_dataset


@pytest.fixture(scope="module")
def task() -> Iterator[DigitsEdgeCase]:
    # Module-scoped fixtures run before the per-test single-thread fixture: set it here too.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield digits_edge_case(seed=0)
    finally:
        torch.set_num_threads(threads)


def test_edge_set_has_lower_density_than_the_benign_test_set(task: DigitsEdgeCase) -> None:
    """Spec check 1: mean GMM log-density edge < clean test (observed -24.1 vs -21.0)."""
    test_density = task.selection.gmm.score_samples(model_logits(task.reference_model, task.test.x))
    assert task.edge_log_density < test_density.mean() - 1.0
    # The selection is the tail: every chosen 7 scores below every unchosen 7.
    scores = task.selection.log_density
    chosen = np.zeros(len(scores), bool)
    chosen[task.selection.indices] = True
    assert scores[chosen].max() <= scores[~chosen].min()
    assert scores[chosen].max() == task.selection.threshold
    # "Seemingly easy": the clean model still labels >= 90% of them as 7.
    assert task.selection.easy_fraction >= 0.9


def test_digits_edge_sizes_labels_and_hygiene(task: DigitsEdgeCase) -> None:
    """45 tail 7s (25% of 179), 27/18 split, x5 rolls -> 135/90, all labelled 1, removed
    from the clean splits."""
    full = load_digits_dataset()
    assert len(task.edge_indices) == 45 and (full.y[task.edge_indices] == 7).all()
    assert (len(task.edge_train), len(task.edge_test)) == (135, 90)
    assert (task.edge_train.y == 1).all() and (task.edge_test.y == 1).all()
    assert len(task.train) + len(task.test) + 45 == len(full)

    def rows(data: ArrayDataset) -> set[bytes]:
        return {x.tobytes() for x in data.x}

    edge_images = rows(full.subset(task.edge_indices))
    assert not edge_images & rows(task.train) and not edge_images & rows(task.test)
    # Train-side and test-side edge sets share no source image (nor any augmented copy).
    assert not rows(task.edge_train) & rows(task.edge_test)
    assert len(rows(task.edge_train) & edge_images) == 27


def test_digits_edge_is_deterministic_in_the_seed(task: DigitsEdgeCase) -> None:
    again = digits_edge_case(seed=0, augment=False)
    np.testing.assert_array_equal(again.edge_indices, task.edge_indices)
    np.testing.assert_array_equal(again.edge_train.x, task.edge_train.x[:27])
    assert len(again.edge_test) == 18


def test_select_tail_by_quantile_and_threshold() -> None:
    scores = np.array([-1.0, -5.0, -3.0, -2.0])
    idx, thr = select_tail(scores, tail_quantile=0.5)
    assert idx.tolist() == [1, 2] and thr == -3.0
    idx, thr = select_tail(scores, threshold=-2.0)
    assert idx.tolist() == [1, 2, 3] and thr == -2.0
    with pytest.raises(ValueError, match="exactly one"):
        select_tail(scores)
    with pytest.raises(ValueError, match="tail_quantile"):
        select_tail(scores, tail_quantile=0.0)


def test_builder_on_a_user_feature_function_picks_far_points() -> None:
    """Two Gaussian classes; candidates far from both get the lowest density."""
    rng = np.random.default_rng(0)
    benign_x = np.concatenate([rng.normal(0, 1, (200, 2)), rng.normal(8, 1, (200, 2))])
    benign = ArrayDataset(benign_x.astype(np.float32), np.repeat([0, 1], 200), 2)
    cand_x = np.array([[0.1, 0.0], [8.0, 8.2], [4.0, 4.0], [20.0, -5.0]], np.float32)
    candidates = ArrayDataset(cand_x, np.array([0, 1, 0, 1]), 2)
    result = build_edge_case_set(
        lambda x: x, benign, candidates, tail_quantile=None, threshold=-15.0, target_label=1
    )
    assert sorted(result.indices.tolist()) == [2, 3]
    assert (result.edge.y == 1).all()
    gmm = fit_class_gmm(benign_x, benign.y)
    assert gmm.n_components == 2


def test_split_edge_examples_reproduces_task_2_counts() -> None:
    """Paper Task 2: attacker always 66; p=50% -> 66 honest over 66 clients; p=10% -> 594
    over 169 clients, sized as numpy.array_split does."""
    edge = ArrayDataset(np.arange(660, dtype=np.float32)[:, None], np.full(660, 7), 10)
    half = split_edge_examples(edge, 0.5, 66, seed=0, num_attacker_examples=66)
    assert len(half.attacker) == 66 and [len(h) for h in half.honest] == [1] * 66
    tenth = split_edge_examples(edge, 0.1, 169, seed=0, num_attacker_examples=66, honest_label=7)
    sizes = [len(h) for h in tenth.honest]
    assert sum(sizes) == 594 and sizes == [len(c) for c in np.array_split(np.arange(594), 169)]
    # Disjoint, and p exact: 66 / (66 + 594) = 0.1.
    held = np.concatenate([tenth.attacker.x[:, 0]] + [h.x[:, 0] for h in tenth.honest])
    assert len(np.unique(held)) == 660
    assert len(tenth.attacker) / len(held) == 0.1
    full = split_edge_examples(edge, 1.0, 0, seed=0)
    assert len(full.attacker) == 660 and full.honest == ()


def test_split_edge_examples_relabels_honest_part_and_validates() -> None:
    edge = relabel(ArrayDataset(np.zeros((10, 1), np.float32), np.full(10, 7), 10), 1)
    split = split_edge_examples(edge, 0.3, 2, seed=1, honest_label=7)
    assert len(split.attacker) == 3 and (split.attacker.y == 1).all()
    assert all((h.y == 7).all() for h in split.honest)
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="attacker_fraction"):
            split_edge_examples(edge, bad, 2, seed=0)
    with pytest.raises(ValueError, match="cannot give the attacker"):
        split_edge_examples(edge, 0.1, 2, seed=0, num_attacker_examples=5)
