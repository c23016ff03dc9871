"""DETOX core: majority vote, HIER-AGGR, node groups, filtering statistics, vote-group rule.

Robust-aggregation spec section 2 (dissertation chapter 7) and acceptance checks 7-10 of
section 5. The aggregation rules used as A0/A1 in checks 9-10 are imported inside the tests,
so the rest of this file does not depend on them.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from flower_suite.aggregation.base import AggregationResult
from flower_suite.aggregation.detox import (
    Aggregator,
    VoteResult,
    byzantine_majority_groups,
    check_vote_group_rule,
    detox_aggregate,
    expected_byzantine_groups,
    group_votes,
    hier_aggr,
    majority_vote,
    make_node_groups,
    max_byzantine_groups,
)

LOGGER = "flower_suite.aggregation.detox"


# ----------------------------------------------------------------------------- helpers


def _mean(x: torch.Tensor) -> AggregationResult:
    """Plain mean (local stand-in, so the unit tests do not need the rule modules)."""
    return AggregationResult(x.mean(dim=0))


def _median(x: torch.Tensor) -> AggregationResult:
    """Coordinate-wise median averaging the two middle values (local stand-in)."""
    s = x.sort(dim=0).values
    n = x.shape[0]
    return AggregationResult((s[(n - 1) // 2] + s[n // 2]) / 2)


def _first(x: torch.Tensor) -> AggregationResult:
    """A Krum-like stub selecting the first row of its input: exposes the partition order."""
    return AggregationResult(x[0].clone(), selected=(0,))


def _vectors(count: int, d: int = 6, seed: int = 0) -> torch.Tensor:
    """``count`` distinct random float64 vectors."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(count, d, generator=g, dtype=torch.float64)


def _alie_z_max(n: int, f: int) -> float:
    """ALIE's z_max = Φ^{-1}((n - s)/n), s = ⌊n/2 + 1⌋ - f (Baruch et al. 2019; spec 4)."""
    s = math.floor(n / 2 + 1) - f
    return float(norm.ppf((n - s) / n))


def _attack(outputs: torch.Tensor, byzantine: torch.Tensor, attack: str, q: int) -> torch.Tensor:
    """The vector all colluding Byzantine nodes send (spec 4, 2.6 Fig 7.6).

    ``constant``: every coordinate 100/sqrt(d), so the l2 norm is 100. ``alie``: μ + z_max σ
    with the coordinate-wise mean and population std (ddof 0, spec 6.10) of the honest outputs.
    """
    n, d = outputs.shape
    if attack == "constant":
        return torch.full((d,), 100.0 / math.sqrt(d), dtype=outputs.dtype)
    honest = outputs[~byzantine]
    mu = honest.mean(dim=0)
    sigma = honest.std(dim=0, correction=0)
    return mu + _alie_z_max(n, q) * sigma


def _mean_estimation(
    *,
    p: int,
    q: int,
    r: int,
    ks: tuple[int, ...],
    d: int,
    samples: int,
    trials: int,
    attack: str,
    outer: Aggregator,
    inner: Aggregator,
) -> tuple[np.ndarray, dict[int, np.ndarray], np.ndarray]:
    """Synthetic mean estimation (scaled-down Fig 7.6, seed:2917; spec checks 9-10).

    True mean 0, so the error is the l2 norm of the estimate. Vanilla: each of the ``p`` nodes
    averages ``samples`` draws from N(0, I_d); the first ``q`` nodes (fixed Byzantine set,
    spec 6.3) send the attack vector; the estimate is ``outer`` over all p outputs. DETOX: the
    ``r`` members of a node group (random per trial) share one mean of ``r * samples`` draws,
    Byzantine members send the attack vector, then ``detox_aggregate(inner -> outer)``.
    Returns the per-trial vanilla errors, DETOX errors per ``k`` and q̂.
    """
    vanilla = np.empty(trials)
    detox = {k: np.empty(trials) for k in ks}
    q_hat = np.empty(trials, dtype=int)
    byzantine = torch.zeros(p, dtype=torch.bool)
    byzantine[:q] = True
    for t in range(trials):
        g = torch.Generator().manual_seed(1000 + t)
        plain = torch.randn(p, samples, d, generator=g, dtype=torch.float64).mean(dim=1)
        plain[byzantine] = _attack(plain, byzantine, attack, q)
        vanilla[t] = float(outer(plain).aggregate.norm())

        groups = make_node_groups(p, r, seed=t)
        shared = torch.randn(p // r, r * samples, d, generator=g, dtype=torch.float64).mean(dim=1)
        outputs = torch.empty(p, d, dtype=torch.float64)
        for j, members in enumerate(groups):
            outputs[members] = shared[j]
        outputs[byzantine] = _attack(outputs, byzantine, attack, q)
        q_hat[t] = byzantine_majority_groups(groups, range(q))
        for k in ks:
            result = detox_aggregate(
                outputs, groups, num_vote_groups=k, inner=inner, outer=outer, seed=t
            )
            detox[k][t] = float(result.aggregate.norm())
    return vanilla, detox, q_hat


# ----------------------------------------------------------------------------- check 7: vote


def test_vote_one_byzantine_member_gives_honest_vector() -> None:
    """Check 7: r = 3 with one Byzantine member; the vote is the honest vector (member 0)."""
    # prepare
    honest, byzantine = _vectors(2)
    group = torch.stack([honest, byzantine, honest])
    # execute
    vote, winner = majority_vote(group)
    # assert
    assert vote is not None
    assert torch.equal(vote, honest)
    assert winner == 0


def test_vote_two_identical_byzantine_members_win() -> None:
    """Check 7: two colluding Byzantine members with the same vector outvote the honest one."""
    honest, byzantine = _vectors(2)
    group = torch.stack([byzantine, honest, byzantine])
    vote, winner = majority_vote(group)
    assert vote is not None
    assert torch.equal(vote, byzantine)
    assert winner == 0


def test_vote_three_distinct_vectors_give_zero_or_drop() -> None:
    """Check 7: three distinct vectors have no majority: the zero vector ("zero"), or None."""
    group = _vectors(3)
    vote, winner = majority_vote(group)
    assert vote is not None
    assert torch.equal(vote, torch.zeros(6, dtype=torch.float64))
    assert winner is None
    assert majority_vote(group, on_no_majority="drop") == (None, None)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ("abc", None),  # Boyer-Moore's candidate is c, which has 1 of 3 votes
        ("abacd", None),  # candidate d; a has 2 of 5 votes, not a strict majority
        ("aabb", None),  # even r: 2 of 4 is not a strict majority
        ("abbaa", "a"),  # candidate switches to b and back; a has 3 of 5
        ("bcaaa", "a"),
        ("a", "a"),
    ],
)
def test_boyer_moore_candidate_is_confirmed_by_counting(labels: str, expected: str | None) -> None:
    """The counting pass rejects Boyer-Moore's candidate when it lacks > r/2 votes (spec 2.2)."""
    table = {c: row for c, row in zip("abcd", _vectors(4), strict=True)}
    group = torch.stack([table[c] for c in labels])
    vote, winner = majority_vote(group, on_no_majority="drop")
    if expected is None:
        assert (vote, winner) == (None, None)
    else:
        assert vote is not None
        assert torch.equal(vote, table[expected])
        assert winner == labels.index(expected)


@settings(max_examples=150, deadline=None)
@given(labels=st.lists(st.integers(0, 3), min_size=1, max_size=9), seed=st.integers(0, 2**16))
def test_vote_matches_counting_reference(labels: list[int], seed: int) -> None:
    """Property: the vote equals an obviously-correct Counter majority (lowest winning index)."""
    table = _vectors(4, d=5, seed=seed).to(torch.float32)
    group = table[labels]
    label, count = Counter(labels).most_common(1)[0]
    vote, winner = majority_vote(group)
    assert vote is not None
    if 2 * count > len(labels):
        assert winner == labels.index(label)
        assert torch.equal(vote, table[label])
    else:
        assert winner is None
        assert torch.equal(vote, torch.zeros(5))


def test_vote_returns_a_copy_in_input_dtype() -> None:
    """The vote is a fresh tensor in the input dtype; the input is not modified."""
    group = _vectors(1).to(torch.float32).repeat(3, 1)
    before = group.clone()
    vote, _ = majority_vote(group)
    assert vote is not None and vote.dtype == torch.float32
    vote += 1.0
    assert torch.equal(group, before)


def test_tolerance_mode_accepts_tiny_relative_differences() -> None:
    """Members differing by 1e-9 relative agree with tolerance=1e-6 but not in exact mode."""
    # prepare: two honest members whose floating-point results differ slightly, one Byzantine
    honest, byzantine = _vectors(2)
    noisy = honest * (1.0 + 1e-9)
    group = torch.stack([honest, byzantine, noisy])
    assert not torch.equal(honest, noisy)
    # execute
    tolerant, tolerant_winner = majority_vote(group, tolerance=1e-6)
    exact, exact_winner = majority_vote(group)
    # assert
    # Boyer-Moore's confirmed candidate (member 2) is returned, with its own vector
    assert tolerant_winner == 2
    assert tolerant is not None and torch.equal(tolerant, noisy)
    assert exact is not None and torch.equal(exact, torch.zeros_like(honest))
    assert exact_winner is None
    # a relative difference well above the tolerance is still a disagreement
    far = torch.stack([honest, byzantine, honest * (1.0 + 1e-3)])
    assert majority_vote(far, tolerance=1e-6)[1] is None


def test_tolerance_mode_scans_when_candidate_fails() -> None:
    """Closeness is not transitive: a failed Boyer-Moore candidate does not hide a majority."""
    # On a line a < b < c (steps of 0.8e-6 relative) b is close to a and c, but a and c are
    # not close; d is far. For [a, b, c, c, d] Boyer-Moore ends on d (1 vote), yet b is close
    # to 4 of the 5 members.
    base = torch.ones(4, dtype=torch.float64)
    a, b, c, d = base, base * (1 + 0.8e-6), base * (1 + 1.6e-6), base * 2
    vote, winner = majority_vote(torch.stack([a, b, c, c, d]), tolerance=1e-6)
    assert winner == 1
    assert vote is not None and torch.equal(vote, b)


def test_exact_mode_is_bytewise() -> None:
    """Exact mode compares bytes (spec 6.1): -0.0 and +0.0 are different votes."""
    zero = torch.zeros(3)
    group = torch.stack([zero, -zero, -zero])
    vote, winner = majority_vote(group)
    assert winner == 1
    assert vote is not None and torch.signbit(vote).all()


def test_vote_rejects_bad_arguments() -> None:
    """Invalid options and non-finite inputs raise ValueError naming the rule."""
    group = _vectors(3)
    with pytest.raises(ValueError, match="on_no_majority"):
        majority_vote(group, on_no_majority="nan")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tolerance"):
        majority_vote(group, tolerance=-1.0)
    group[1, 0] = float("nan")
    with pytest.raises(ValueError, match="majority_vote"):
        majority_vote(group)


# ----------------------------------------------------------------------------- group votes


def test_group_votes_zero_and_drop_modes() -> None:
    """Per-group votes: winners index the p updates; no-majority groups are zeroed or dropped."""
    # prepare: group 0 honest majority, group 1 no majority, group 2 Byzantine majority
    h0, h2, x, y, z = _vectors(5)
    updates = torch.stack([h0, x, y, h0, z, x, x, h2, h0])
    groups = [[0, 2, 3], [1, 4, 8], [5, 6, 7]]
    # execute
    zeroed = group_votes(updates, groups)
    dropped = group_votes(updates, groups, on_no_majority="drop")
    # assert
    assert isinstance(zeroed, VoteResult)
    assert torch.equal(zeroed.votes, torch.stack([h0, torch.zeros_like(h0), x]))
    assert zeroed.winners == (0, None, 5)
    assert zeroed.group_index == (0, 1, 2)
    assert zeroed.no_majority_groups == (1,)
    assert zeroed.selected == (0, 5)
    assert torch.equal(dropped.votes, torch.stack([h0, x]))
    assert dropped.winners == (0, 5)
    assert dropped.group_index == (0, 2)
    assert dropped.no_majority_groups == (1,)


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ([], "at least one node group"),
        ([[0, 1, 2], []], "empty"),
        ([[0, 1, 2], [2, 3, 4]], "node 2 appears"),
        ([[0, 1, 9]], "not in"),
    ],
)
def test_group_votes_rejects_bad_groups(groups: list[list[int]], message: str) -> None:
    """Node groups must be non-empty, disjoint and index existing updates."""
    with pytest.raises(ValueError, match=message):
        group_votes(_vectors(6), groups)


# ----------------------------------------------------------------------------- HIER-AGGR


def test_hier_aggr_is_deterministic_under_seed() -> None:
    """The same seed (int or seeded Generator) gives the same partition and result."""
    votes = _vectors(12)
    kwargs = {"num_vote_groups": 4, "inner": _median, "outer": _mean}
    first = hier_aggr(votes, rng=7, **kwargs)
    again = hier_aggr(votes, rng=7, **kwargs)
    from_generator = hier_aggr(votes, rng=torch.Generator().manual_seed(7), **kwargs)
    other = hier_aggr(votes, rng=8, **kwargs)
    assert torch.equal(first.aggregate, again.aggregate)
    assert torch.equal(first.aggregate, from_generator.aggregate)
    assert not torch.equal(first.aggregate, other.aggregate)


def test_hier_aggr_partitions_votes_into_equal_groups() -> None:
    """Every vote lands in exactly one of k groups of size p̂/k; selections map back."""
    # prepare: vote i is the constant vector i, and the inner stub picks each group's first vote
    votes = torch.arange(15, dtype=torch.float64)[:, None].repeat(1, 3)
    seen: list[list[float]] = []

    def recording_first(x: torch.Tensor) -> AggregationResult:
        seen.append(x[:, 0].tolist())
        return _first(x)

    # execute
    result = hier_aggr(votes, num_vote_groups=5, inner=recording_first, outer=_mean, rng=3)
    # assert
    assert sorted(v for group in seen for v in group) == list(range(15))
    assert [len(group) for group in seen] == [3] * 5
    assert result.selected == tuple(sorted(int(group[0]) for group in seen))
    assert torch.allclose(result.aggregate, votes[list(result.selected)].mean(dim=0))
    assert result.info["num_vote_groups"] == 5.0 and result.info["num_votes"] == 15.0


def test_hier_aggr_single_group_is_outer_of_inner() -> None:
    """k = 1 means A1(A0(all votes)) (spec 3.10), with the votes in their given order."""
    votes = _vectors(9)
    result = hier_aggr(votes, num_vote_groups=1, inner=_first, outer=_median, rng=0)
    expected = _median(_first(votes).aggregate[None, :]).aggregate
    assert torch.equal(result.aggregate, expected)
    assert torch.equal(result.aggregate, votes[0])
    assert result.selected == (0,)


def test_hier_aggr_requires_divisibility_unless_uneven() -> None:
    """k must divide p̂ (spec 6.5); allow_uneven gives sizes 7 and 8 as for D-Multi-Krum."""
    votes = _vectors(15)
    with pytest.raises(ValueError, match="divide"):
        hier_aggr(votes, num_vote_groups=2, inner=_mean, outer=_mean, rng=0)
    with pytest.raises(ValueError, match="num_vote_groups"):
        hier_aggr(votes, num_vote_groups=16, inner=_mean, outer=_mean, rng=0)
    sizes: list[int] = []

    def recording_mean(x: torch.Tensor) -> AggregationResult:
        sizes.append(x.shape[0])
        return _mean(x)

    result = hier_aggr(
        votes, num_vote_groups=2, inner=recording_mean, outer=_mean, rng=0, allow_uneven=True
    )
    assert sorted(sizes) == [7, 8]
    assert result.info["min_vote_group_size"] == 7.0


# ----------------------------------------------------------------------------- detox_aggregate


def test_detox_aggregate_end_to_end() -> None:
    """Votes then HIER-AGGR: selected lists winning members; info counts no-majority groups."""
    # prepare: 4 node groups of 3; group 3 has no majority
    h, b, x, y = _vectors(4)
    updates = torch.stack([h, h, b, h, h, h, b, b, h, h, x, y])
    groups = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    # execute
    zero = detox_aggregate(updates, groups, num_vote_groups=1, inner=_mean, outer=_mean, seed=0)
    drop = detox_aggregate(
        updates,
        groups,
        num_vote_groups=1,
        inner=_mean,
        outer=_mean,
        seed=0,
        on_no_majority="drop",
    )
    # assert
    assert torch.allclose(zero.aggregate, (2 * h + b) / 4)
    assert zero.selected == (0, 3, 6)
    assert zero.info["no_majority_groups"] == 1.0
    assert zero.info["num_node_groups"] == 4.0
    assert torch.allclose(drop.aggregate, (2 * h + b) / 3)
    assert drop.selected == (0, 3, 6)


def test_detox_aggregate_drop_mode_without_any_majority_raises() -> None:
    """Dropping every group leaves nothing to aggregate: a clear ValueError."""
    updates = _vectors(6)
    with pytest.raises(ValueError, match="majority"):
        detox_aggregate(
            updates,
            [[0, 1, 2], [3, 4, 5]],
            num_vote_groups=1,
            inner=_mean,
            outer=_mean,
            seed=0,
            on_no_majority="drop",
        )


# ----------------------------------------------------------------------------- node groups


def test_make_node_groups_is_a_seeded_partition() -> None:
    """p/r groups of size r covering [p] exactly once; reproducible under the seed."""
    groups = make_node_groups(45, 3, seed=1)
    assert len(groups) == 15 and all(len(g) == 3 for g in groups)
    assert sorted(i for g in groups for i in g) == list(range(45))
    assert groups == make_node_groups(45, 3, seed=1)
    assert groups != make_node_groups(45, 3, seed=2)


@pytest.mark.parametrize(
    ("p", "r", "message"),
    [(44, 4, "odd"), (45, 0, "odd"), (10, 3, "divide"), (2, 3, "p >= r")],
)
def test_make_node_groups_rejects_bad_sizes(p: int, r: int, message: str) -> None:
    """r must be odd and divide p (spec 2.2, 6.5)."""
    with pytest.raises(ValueError, match=message):
        make_node_groups(p, r, seed=0)


def test_make_node_groups_leftover_option() -> None:
    """allow_leftover puts p mod r nodes into the last group while its size stays odd."""
    groups = make_node_groups(11, 3, seed=0, allow_leftover=True)
    assert [len(g) for g in groups] == [3, 3, 5]
    assert sorted(i for g in groups for i in g) == list(range(11))
    with pytest.raises(ValueError, match="even size"):
        make_node_groups(10, 3, seed=0, allow_leftover=True)


# ----------------------------------------------------------------------------- check 8: statistics


@pytest.mark.parametrize(
    ("p", "q", "r", "expected"),
    [(45, 5, 3, 0.4334), (45, 5, 5, 0.0589), (45, 5, 7, 0.0071), (225, 20, 5, 0.2433)],
)
def test_expected_byzantine_groups_exact_values(p: int, q: int, r: int, expected: float) -> None:
    """Check 8: the exact E[q̂] formula (spec 2.3) gives the worked values."""
    assert expected_byzantine_groups(p, q, r) == pytest.approx(expected, abs=5e-5)


def test_expected_byzantine_groups_edge_cases() -> None:
    """No Byzantine nodes: 0; r = 1 (no redundancy): every Byzantine node is a group, E = q."""
    assert expected_byzantine_groups(45, 0, 3) == 0.0
    assert expected_byzantine_groups(45, 5, 1) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="odd"):
        expected_byzantine_groups(45, 5, 4)
    with pytest.raises(ValueError, match="q <= p"):
        expected_byzantine_groups(45, 46, 3)


@pytest.mark.parametrize(("q", "r", "expected"), [(5, 3, 2), (5, 5, 1), (20, 5, 6), (0, 3, 0)])
def test_max_byzantine_groups(q: int, r: int, expected: int) -> None:
    """Worst case q̂_max = ⌊q / ((r+1)/2)⌋ (spec 2.3): 2 for p=45, q=5, r=3."""
    assert max_byzantine_groups(q, r) == expected


def test_filtering_monte_carlo_matches_formula() -> None:
    """Check 8: 50,000 random partitions (p=45, q=5, r=3): mean q̂ ≈ 0.4334, max q̂ ≤ 2."""
    # prepare: nodes 0..4 are Byzantine; a random permutation split into consecutive triples
    p, q, r, trials = 45, 5, 3, 50_000
    rng = np.random.default_rng(0)
    perms = rng.permuted(np.tile(np.arange(p), (trials, 1)), axis=1)
    # execute
    byzantine_members = (perms < q).reshape(trials, p // r, r).sum(axis=2)
    q_hat = (2 * byzantine_members > r).sum(axis=1)
    # assert
    assert abs(q_hat.mean() - 0.4334) < 0.01
    assert abs(q_hat.mean() - expected_byzantine_groups(p, q, r)) < 0.01
    assert q_hat.max() <= max_byzantine_groups(q, r) == 2


def test_make_node_groups_follows_the_same_law() -> None:
    """make_node_groups itself: 2,000 seeds give mean q̂ near E[q̂] and never more than 2."""
    counts = [
        byzantine_majority_groups(make_node_groups(45, 3, seed=s), range(5)) for s in range(2000)
    ]
    assert abs(np.mean(counts) - expected_byzantine_groups(45, 5, 3)) < 0.05
    assert max(counts) <= 2


# ----------------------------------------------------------------------------- vote-group rule


def test_vote_group_rule_sizes_bulyan_and_multi_krum_with_q_hat() -> None:
    """Spec 6.4: Bulyan A0 needs p̂/k ≥ 4q̂+3, Multi-Krum A0 p̂/k ≥ 2q̂+3, with q̂_max not q."""
    common = {"num_nodes": 45, "num_byzantine": 5, "redundancy": 3}
    # D-Bulyan over all 15 votes: 15 >= 4*2+3 = 11 (with q = 5 it would need 23)
    assert check_vote_group_rule(num_vote_groups=1, inner="bulyan", outer="mean", **common) == 2
    with pytest.raises(ValueError, match=r"4q̂\+3"):
        check_vote_group_rule(num_vote_groups=2, inner="bulyan", outer="mean", **common)
    # D-Multi-Krum with vote groups of 7 and 8: 7 >= 2*2+3 = 7
    assert (
        check_vote_group_rule(
            num_vote_groups=2, inner="Multi-Krum", outer="mean", num_votes=15, **common
        )
        == 2
    )
    with pytest.raises(ValueError, match=r"2q̂\+3"):
        check_vote_group_rule(num_vote_groups=3, inner="multi_krum", outer="mean", **common)
    with pytest.raises(ValueError, match=r"4q̂\+3"):
        check_vote_group_rule(num_vote_groups=5, inner="mean", outer="bulyan", **common)
    with pytest.raises(ValueError, match="unknown"):
        check_vote_group_rule(num_vote_groups=5, inner="bulyn", outer="median", **common)


def test_vote_group_rule_warns_for_median_below_2q_hat_plus_1(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Spec 6.4: median/trimmed-mean A1 with k < 2q̂_max+1 logs a WARNING but does not fail."""
    common = {"num_nodes": 45, "num_byzantine": 5, "redundancy": 3, "inner": "mean"}
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert check_vote_group_rule(num_vote_groups=3, outer="median", **common) == 2
    messages = [rec.getMessage() for rec in caplog.records if rec.name == LOGGER]
    assert any("2q̂_max+1 = 5" in m and "k=3" in m for m in messages)
    assert any("fewer than 5 vote groups" in m for m in messages)
    assert all(rec.levelno == logging.WARNING for rec in caplog.records)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        check_vote_group_rule(num_vote_groups=5, outer="trimmed_mean", **common)
        check_vote_group_rule(num_vote_groups=1, outer="mean", **{**common, "inner": "bulyan"})
    assert [rec for rec in caplog.records if rec.name == LOGGER] == []

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        check_vote_group_rule(num_vote_groups=1, outer="trimmed_mean", **common)
    assert any("2q̂_max+1" in rec.getMessage() for rec in caplog.records)


# ----------------------------------------------------------------------------- checks 9-10


@pytest.mark.parametrize("rule", ["coordinate_median", "geometric_median"])
def test_robust_mean_estimation_fig_7_6(rule: str) -> None:
    """Check 9 (scaled-down Fig 7.6): p=225, q=20, r=5, k=9, d=100, norm-100 attack, 20 trials.

    ``‖DETOX(mean -> A1)‖ <= 0.7 ‖A1 over the p vanilla nodes‖`` for A1 = coordinate-wise median
    (observed 0.185 vs 0.334) and geometric median (observed 0.151 vs 0.270).
    """
    from flower_suite.aggregation.coordinate import coordinate_median
    from flower_suite.aggregation.geometric_median import geometric_median
    from flower_suite.aggregation.mean import weighted_mean

    outer = coordinate_median if rule == "coordinate_median" else geometric_median
    vanilla, detox, _ = _mean_estimation(
        p=225,
        q=20,
        r=5,
        ks=(9,),
        d=100,
        samples=20,
        trials=20,
        attack="constant",
        outer=outer,
        inner=weighted_mean,
    )
    assert detox[9].mean() <= 0.7 * vanilla.mean()


def test_vote_group_rule_mean_estimation_constant_attack(caplog: pytest.LogCaptureFixture) -> None:
    """Check 10: p=45, q=5, r=3, d=100, 200 trials, norm-100 attack, A0 = mean, A1 = median.

    32 samples per vanilla node and 96 per node group (the paper's 32/96, spec 2.5). With
    k = 5 ≥ 2q̂_max+1 DETOX beats vanilla median (observed 0.358 vs 0.445). With k = 3 the rule
    is broken, a WARNING is logged, and a q̂ = 2 event breaks the median (observed mean 0.95).
    """
    from flower_suite.aggregation.coordinate import coordinate_median
    from flower_suite.aggregation.mean import weighted_mean

    vanilla, detox, q_hat = _mean_estimation(
        p=45,
        q=5,
        r=3,
        ks=(5, 3),
        d=100,
        samples=32,
        trials=200,
        attack="constant",
        outer=coordinate_median,
        inner=weighted_mean,
    )
    assert detox[5].mean() < vanilla.mean()
    assert detox[5].max() < 2.0  # k = 5 outvotes even two Byzantine votes
    broken = detox[3][q_hat == 2]
    assert broken.size > 0 and broken.max() > 10.0
    assert detox[3].mean() > detox[5].mean()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        check_vote_group_rule(
            num_nodes=45, num_byzantine=5, redundancy=3, num_vote_groups=3, outer="median"
        )
    assert any("2q̂_max+1" in rec.getMessage() for rec in caplog.records)


def test_vote_group_rule_mean_estimation_alie_attack() -> None:
    """Check 10 under ALIE (z = z_max(45, 5) ≈ 0.2533, omniscient μ, σ), k = 5, 200 trials.

    DETOX-median beats vanilla median (observed 0.320 vs 0.412).
    """
    from flower_suite.aggregation.coordinate import coordinate_median
    from flower_suite.aggregation.mean import weighted_mean

    assert _alie_z_max(45, 5) == pytest.approx(0.2533, abs=1e-3)
    assert _alie_z_max(50, 24) == pytest.approx(1.7507, abs=1e-3)
    vanilla, detox, _ = _mean_estimation(
        p=45,
        q=5,
        r=3,
        ks=(5,),
        d=100,
        samples=32,
        trials=200,
        attack="alie",
        outer=coordinate_median,
        inner=functools.partial(weighted_mean, weights=None),
    )
    assert detox[5].mean() < vanilla.mean()


def test_paper_configurations_with_real_rules() -> None:
    """D-Bulyan (k = 1) and D-Multi-Krum (7 + 8) sized by check_vote_group_rule run and filter.

    p = 45, q = 5, r = 3 with a node-group partition giving q̂ = 2 Byzantine votes (norm-100
    constant): the rules accept f = q̂_max = 2 on these vote-group sizes and the Byzantine
    votes do not move the result.
    """
    from flower_suite.aggregation.bulyan import bulyan
    from flower_suite.aggregation.krum import multi_krum
    from flower_suite.aggregation.mean import weighted_mean

    # prepare: groups 0 and 1 get two Byzantine members each (q = 4 of the 5 used)
    p, q, r, d = 45, 5, 3, 20
    groups = [list(range(j * r, (j + 1) * r)) for j in range(p // r)]
    byzantine = [0, 1, 3, 4, 6]
    g = torch.Generator().manual_seed(0)
    shared = torch.randn(p // r, d, generator=g, dtype=torch.float64)
    updates = shared.repeat_interleave(r, dim=0)
    updates[byzantine] = 100.0 / math.sqrt(d)
    assert byzantine_majority_groups(groups, byzantine) == 2
    q_hat = check_vote_group_rule(
        num_nodes=p, num_byzantine=q, redundancy=r, num_vote_groups=1, inner="bulyan", outer="mean"
    )
    check_vote_group_rule(
        num_nodes=p,
        num_byzantine=q,
        redundancy=r,
        num_vote_groups=2,
        inner="multi_krum",
        outer="mean",
    )
    # execute
    d_bulyan = detox_aggregate(
        updates,
        groups,
        num_vote_groups=1,
        inner=functools.partial(bulyan, num_malicious_nodes=q_hat),
        outer=weighted_mean,
        seed=0,
    )
    d_multi_krum = detox_aggregate(
        updates,
        groups,
        num_vote_groups=2,
        inner=functools.partial(multi_krum, num_malicious_nodes=q_hat),
        outer=weighted_mean,
        seed=0,
        allow_uneven=True,
    )
    # assert: Multi-Krum drops both Byzantine votes (winners 0 and 3); Bulyan's selection set
    # may keep them, its trimmed second stage removes their influence
    honest_mean = shared[2:].mean(dim=0)
    assert d_multi_krum.selected and not {0, 3} & set(d_multi_krum.selected)
    assert len(d_bulyan.selected) == 15 - 2 * q_hat
    for result in (d_bulyan, d_multi_krum):
        assert float((result.aggregate - honest_mean).norm()) < 2.0


def test_group_size_keeps_a_lone_survivor_from_winning() -> None:
    """With group_size = r = 3, one remaining member (or none) is no majority; two agreeing
    remaining members are."""
    honest = torch.ones(4)
    updates = torch.stack([torch.full((4,), 9.0), honest, honest])
    vote = group_votes(updates, [[0], [1, 2], []], group_size=3)
    assert vote.no_majority_groups == (0, 2)
    torch.testing.assert_close(vote.votes[1], honest)
    assert torch.count_nonzero(vote.votes[0]) == 0 and torch.count_nonzero(vote.votes[2]) == 0
    # Without group_size the lone member would win its one-member group.
    assert group_votes(updates, [[0], [1, 2]]).no_majority_groups == ()
    with pytest.raises(ValueError, match="more than group_size"):
        group_votes(updates, [[0, 1, 2]], group_size=2)
