"""End to end (spec draco.md 8.9): softmax regression trained through each code, in float64,
with s fresh random adversaries per iteration, follows the adversary-free trajectory."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from flower_suite.coding import (
    decode_cyclic,
    decode_repetition,
    encode_cyclic,
    encode_repetition,
    make_cyclic_code,
    make_repetition_code,
)

FEATURES, CLASSES, PER_PARTITION, ITERATIONS, LR = 6, 3, 12, 30, 0.5

Aggregate = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(partition gradients (P, d), adversary mask (P,)) -> the summed gradient used for the step."""


def make_data(p: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((p, PER_PARTITION, FEATURES))
    logits = x @ rng.standard_normal((FEATURES, CLASSES))
    return x, logits.argmax(axis=-1)


def partition_gradients(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per partition, the summed cross-entropy gradient w.r.t. the flattened weights."""
    logits = x @ w.reshape(FEATURES, CLASSES)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    probs[np.arange(x.shape[0])[:, None], np.arange(x.shape[1])[None, :], y] -= 1.0
    return np.einsum("pnf,pnc->pfc", x, probs).reshape(x.shape[0], -1)


def loss(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    logits = x @ w.reshape(FEATURES, CLASSES)
    logits -= logits.max(axis=-1, keepdims=True)
    picked = np.take_along_axis(logits, y[..., None], axis=-1)[..., 0]
    return float((np.log(np.exp(logits).sum(axis=-1)) - picked).mean())


def train(p: int, s: int, aggregate: Aggregate) -> tuple[np.ndarray, list[float]]:
    x, y = make_data(p)
    rng = np.random.default_rng(1)  # the server's seed: s fresh adversaries every iteration
    w = np.zeros(FEATURES * CLASSES)
    losses = [loss(w, x, y)]
    for _ in range(ITERATIONS):
        mask = np.zeros(p, dtype=bool)
        mask[rng.choice(p, s, replace=False)] = True
        w = w - LR * aggregate(partition_gradients(w, x, y), mask) / (p * PER_PARTITION)
        losses.append(loss(w, x, y))
    return w, losses


def reverse(messages: np.ndarray, mask: np.ndarray) -> np.ndarray:
    attacked = messages.copy()
    attacked[mask] *= -100.0
    return attacked


def exact_sum(gradients: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return gradients.sum(axis=0)


def test_repetition_trajectory_is_bitwise_the_adversary_free_one() -> None:
    code = make_repetition_code(10, 2)  # two groups of 5

    def draco(gradients: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return decode_repetition(code, reverse(encode_repetition(code, gradients), mask)).total

    def adversary_free(gradients: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return decode_repetition(code, encode_repetition(code, gradients)).total

    attacked, losses = train(10, 2, draco)
    clean, _ = train(10, 2, adversary_free)
    assert np.abs(attacked - clean).max() == 0.0
    assert np.abs(attacked - train(10, 2, exact_sum)[0]).max() <= 1e-12
    assert losses[-1] < 0.5 * losses[0]


def test_cyclic_trajectory_matches_the_adversary_free_one() -> None:
    code = make_cyclic_code(9, 2)
    rng = np.random.default_rng(2)

    def draco(gradients: np.ndarray, mask: np.ndarray) -> np.ndarray:
        received = reverse(encode_cyclic(code, gradients), mask)
        return decode_cyclic(code, received, rng=rng).total

    attacked, losses = train(9, 2, draco)
    clean, _ = train(9, 2, exact_sum)
    assert np.abs(attacked - clean).max() <= 1e-8
    assert losses[-1] < 0.5 * losses[0]


def test_plain_averaging_diverges_under_one_reverse_gradient_adversary() -> None:
    def plain(gradients: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return reverse(gradients, mask).sum(axis=0)

    _, losses = train(9, 1, plain)
    assert losses[-1] > losses[0]
