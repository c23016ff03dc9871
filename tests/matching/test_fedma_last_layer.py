"""Spec check 7: class-proportion weighted last layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fedma_reference import mlp_forward

from flower_suite.matching import (
    class_weighted_last_layer,
    class_weights,
    describe_model,
    matched_average,
    permute_model,
)
from flower_suite.models.mlp import MLP


def test_class_weights_sum_to_one_and_absent_class_is_uniform() -> None:
    counts = np.array([[5, 0, 0, 1], [15, 7, 0, 1], [0, 0, 0, 2]])

    weights = class_weights(counts)

    np.testing.assert_allclose(weights.sum(axis=0), 1.0)
    np.testing.assert_allclose(weights[:, 0], [0.25, 0.75, 0.0])
    np.testing.assert_allclose(weights[:, 2], [1 / 3] * 3)


def test_sole_holder_of_a_class_gives_its_column_exactly() -> None:
    rng = np.random.default_rng(0)
    w = [rng.normal(size=(3, 4)) for _ in range(2)]
    b = [rng.normal(size=3) for _ in range(2)]
    counts = np.array([[10, 0, 3], [5, 8, 3]])

    glob_w = class_weighted_last_layer(w, counts)
    glob_b = class_weighted_last_layer(b, counts)

    np.testing.assert_array_equal(glob_w[1], w[1][1])
    np.testing.assert_array_equal(glob_b[1], b[1][1])
    np.testing.assert_allclose(glob_w[0], (2 * w[0][0] + w[1][0]) / 3)
    np.testing.assert_allclose(glob_w[2], (w[0][2] + w[1][2]) / 2)


def test_bad_class_counts_raise() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        class_weights(np.array([[-1, 2]]))
    with pytest.raises(ValueError, match="expected"):
        class_weighted_last_layer([np.zeros((3, 2))] * 2, np.ones((2, 4)))


def test_matched_average_with_class_counts_recovers_permuted_copies() -> None:
    torch.manual_seed(0)
    model = MLP(6, (8,), 3).double()
    layers = describe_model(model)
    state = model.state_dict()
    rng = np.random.default_rng(1)
    clients = [permute_model(state, layers, [rng.permutation(8)]) for _ in range(3)]
    counts = np.array([[3, 0, 1], [1, 0, 1], [0, 0, 5]])
    x = torch.randn(16, 6, dtype=torch.float64)

    result = matched_average(clients, layers, gamma0=1e-3, class_counts=counts)

    names = ["net.1", "net.3"]
    torch.testing.assert_close(
        mlp_forward(result.state, names, x), mlp_forward(state, names, x), atol=1e-12, rtol=0
    )
