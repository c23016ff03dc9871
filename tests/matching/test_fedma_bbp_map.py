"""BBP-MAP matching of one layer: spec checks 2 (cost matrix), 5 (bounds, determinism), 6."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flower_suite.matching import bbp_map_scores, match_layer

ONE = np.ones(2)
ZERO = np.zeros(2)


def test_score_matrix_hand_computed_j2_d2() -> None:
    # prepare: one global unit seeded by client 0 (m=1), sigma^2 = sigma0^2 = 1, mu0 = 0
    theta = np.array([[1.0, 2.0]])
    w = np.array([[1.0, 2.0], [3.0, -1.0]])
    a, p, m = theta.copy(), np.full((1, 2), 2.0), np.array([1])

    scores = bbp_map_scores(
        w, a, p, m, n_clients=2, s0=ONE, s=ONE, mu0=ZERO, gamma0=0.5, n_new=2
    )  # fmt: skip

    # existing: sum_d (a+u)^2/3 - a^2/2, popularity log(1/(2-1)) = 0
    exist = [np.sum((theta[0] + wl) ** 2 / 3 - theta[0] ** 2 / 2) for wl in w]
    new = [np.sum(wl**2) / 2 + 2 * np.log(0.5 / 2) for wl in w]
    assert scores.shape == (2, 1 + 2)
    np.testing.assert_allclose(scores[:, 0], exist, rtol=1e-14)
    np.testing.assert_allclose(scores[:, 1], new, rtol=1e-14)
    np.testing.assert_allclose(scores[:, 1] - scores[:, 2], 2 * np.log(2), rtol=1e-14)


def test_popularity_term_and_count_cap() -> None:
    a = np.zeros((3, 2))
    p = np.ones((3, 2)) * 4.0
    m = np.array([3, 10, 15])

    scores = bbp_map_scores(
        np.zeros((1, 2)), a, p, m, n_clients=20, s0=ONE, s=ONE, mu0=ZERO, gamma0=1.0, n_new=0,
        popularity_weight=2.0,
    )  # fmt: skip

    np.testing.assert_allclose(scores[0, 0], 2 * np.log(3 / 17))
    assert scores[0, 1] == scores[0, 2] == pytest.approx(2 * np.log(10 / 10))


@pytest.mark.parametrize(("gamma0", "matched"), [(1e-3, True), (1e6, False)])
def test_identical_unit_matches_iff_threshold(gamma0: float, matched: bool) -> None:
    # ||w||^2/3 - 2 log(gamma0/2) > 0  <=>  matching beats a new unit (spec check 2)
    w = np.array([[0.6, 0.8]])

    result = match_layer([w, w], gamma0=gamma0, iterations=0, max_width=2)

    assert (1 / 3 - 2 * np.log(gamma0 / 2) > 0) == matched
    assert result.width == (1 if matched else 2)


def test_posterior_mean_option() -> None:
    w1, w2 = np.array([[1.0, 2.0]]), np.array([[1.5, 2.5]])

    mean = match_layer([w1, w2], gamma0=1e-3)
    post = match_layer([w1, w2], gamma0=1e-3, aggregation="posterior")

    np.testing.assert_allclose(mean.global_weights, (w1 + w2) / 2)
    np.testing.assert_allclose(post.global_weights, (w1 + w2) / 3)
    np.testing.assert_allclose(mean.posterior_mean, (w1 + w2) / 3)
    assert mean.counts.tolist() == [2]


def test_permuted_copies_are_recovered() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(scale=0.3, size=(16, 11))
    perms = [rng.permutation(16) for _ in range(4)]

    result = match_layer([base[p] for p in perms], gamma0=1e-3, seed=3)

    assert result.width == 16
    # original unit o (client row argsort(perm)[o]) lands on one global index for every client
    owners = np.stack([a[np.argsort(p)] for a, p in zip(result.assignments, perms, strict=True)])
    assert (owners == owners[0]).all()
    np.testing.assert_allclose(result.global_weights[owners[0]], base, atol=1e-14)


@settings(max_examples=30, deadline=None)
@given(
    widths=st.lists(st.integers(1, 9), min_size=1, max_size=5),
    log_gamma=st.sampled_from([-3.0, 0.0, 0.85, 6.0]),
    extra=st.integers(0, 20),
    seed=st.integers(0, 100),
)
def test_width_bounds_injective_and_deterministic(
    widths: list[int], log_gamma: float, extra: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    clients = [rng.normal(scale=rng.choice([0.1, 1.0]), size=(n, 3)) for n in widths]
    max_width = max(widths) + extra

    result = match_layer(clients, gamma0=10**log_gamma, seed=seed, max_width=max_width)
    again = match_layer(clients, gamma0=10**log_gamma, seed=seed, max_width=max_width)

    assert max(widths) <= result.width <= min(sum(widths), max_width)
    for assign, n in zip(result.assignments, widths, strict=True):
        assert assign.shape == (n,)
        assert len(set(assign.tolist())) == n
        assert assign.min() >= 0 and assign.max() < result.width
    assert result.counts.sum() == sum(widths) and result.counts.min() >= 1
    np.testing.assert_array_equal(result.global_weights, again.global_weights)
    for a, b in zip(result.assignments, again.assignments, strict=True):
        np.testing.assert_array_equal(a, b)


def test_nothing_matched_with_huge_gamma_reaches_the_sum_of_widths() -> None:
    rng = np.random.default_rng(1)
    clients = [rng.normal(size=(n, 4)) for n in (3, 5, 2)]

    result = match_layer(clients, gamma0=1e6, max_width=10)
    capped = match_layer(clients, gamma0=1e6)  # default max_width = min(700, 2 * 5)

    assert result.width == 10
    assert capped.width == 10
    assert match_layer(clients, gamma0=1e6, max_width=6).width == 6


def test_smaller_gamma_never_gives_a_wider_layer() -> None:
    # spec check 6: small-norm identical units may stay unmatched at gamma0 = 7
    rng = np.random.default_rng(2)
    base = rng.normal(scale=0.3, size=(16, 11))
    clients = [base[rng.permutation(16)] for _ in range(4)]

    narrow = match_layer(clients, gamma0=1e-3, seed=0)
    wide = match_layer(clients, gamma0=7.0, seed=0)

    assert narrow.width == 16
    assert narrow.width <= wide.width


def test_bad_inputs() -> None:
    good = np.zeros((3, 4))
    with pytest.raises(ValueError, match="input dimension mismatch"):
        match_layer([good, np.zeros((3, 5))])
    with pytest.raises(ValueError, match="max_width"):
        match_layer([good, np.zeros((5, 4))], max_width=4)
    with pytest.raises(ValueError, match="at least one"):
        match_layer([])
    with pytest.raises(ValueError, match="non-empty"):
        match_layer([np.zeros(4)])
    with pytest.raises(ValueError, match="aggregation"):
        match_layer([good], aggregation="median")
    with pytest.raises(ValueError, match="finite"):
        match_layer([np.full((2, 4), np.nan)])
    with pytest.raises(ValueError, match="sigma_sq"):
        match_layer([good], sigma_sq=0.0)


def test_per_coordinate_variances_match_the_direct_formula() -> None:
    rng = np.random.default_rng(3)
    w = rng.normal(size=(4, 3))
    a, p = rng.normal(size=(5, 3)), rng.uniform(1.0, 3.0, size=(5, 3))
    m = np.array([1, 2, 3, 1, 2])
    s0, s, mu0 = np.array([1.0, 2.0, 0.5]), np.array([0.5, 1.0, 4.0]), np.array([0, 0, 0.1])

    scores = bbp_map_scores(
        w, a, p, m, n_clients=4, s0=s0, s=s, mu0=mu0, gamma0=2.0, n_new=3
    )  # fmt: skip

    for row, i in np.ndindex(4, 5):
        u = s * w[row]
        pop = np.log(m[i] / (4 - m[i]))
        direct = np.sum((a[i] + u) ** 2 / (p[i] + s) - a[i] ** 2 / p[i]) + pop
        assert scores[row, i] == pytest.approx(direct, rel=1e-12)
    for row, k in np.ndindex(4, 3):
        u, prior = s * w[row], s0 * mu0
        direct = np.sum((prior + u) ** 2 / (s0 + s) - prior**2 / s0)
        direct += 2 * np.log(2.0 / 4) - 2 * np.log(k + 1)
        assert scores[row, 5 + k] == pytest.approx(direct, rel=1e-12)
