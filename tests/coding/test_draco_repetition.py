"""Repetition code: vote, exactness and behaviour beyond the bound (spec draco.md 8.2-8.4)."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import torch
from draco_reference import ATTACKS, attack, reference_repetition_decode, relative_error
from hypothesis import given, settings
from hypothesis import strategies as st

from flower_suite.coding import (
    DecodingError,
    NoMajorityError,
    TooManyAdversariesError,
    decode_repetition,
    encode_repetition,
    majority_vote,
    make_repetition_code,
)
from flower_suite.coding.repetition import _boyer_moore

D = 64


def honest_round(p: int, s: int, seed: int = 0) -> tuple[object, np.ndarray, np.ndarray]:
    code = make_repetition_code(p, s)
    gradients = np.random.default_rng(seed).standard_normal((p, D))
    return code, gradients, encode_repetition(code, gradients)


# ------------------------------------------------------------------ 8.2: the vote


@settings(max_examples=200)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=15))
def test_boyer_moore_finds_any_strict_majority_in_one_pass(values: list[int]) -> None:
    comparisons = 0

    def same(i: int, j: int) -> bool:
        nonlocal comparisons
        comparisons += 1
        return values[i] == values[j]

    candidate = _boyer_moore(range(len(values)), same)
    assert comparisons <= len(values) - 1  # Algorithm 5: one pass, one comparison per item
    value, count = Counter(values).most_common(1)[0]
    if 2 * count > len(values):
        assert values[candidate] == value


@settings(max_examples=200)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=15), st.integers(0, 3))
def test_vote_returns_the_majority_or_rejects(values: list[int], missing: int) -> None:
    rows = np.array([[float(v), -float(v)] for v in values])
    size = len(values) + missing  # missing members vote for nobody
    vote = majority_vote(rows, list(range(len(values))), group_size=size)
    value, count = Counter(values).most_common(1)[0]
    if 2 * count > size:
        assert vote.winner is not None and values[vote.winner] == value
        assert vote.winner == values.index(value)  # lowest index holding it
        assert set(vote.disagreeing) == {i for i, v in enumerate(values) if v != value}
    else:
        assert vote.winner is None and vote.disagreeing == tuple(range(len(values)))


def test_vote_is_bitwise() -> None:
    rows = np.array([[0.0], [-0.0], [-0.0], [0.0], [0.0]])
    assert majority_vote(rows, range(5)).winner == 0
    assert majority_vote(rows, [0, 1, 2]).winner == 1  # -0.0 twice outvotes 0.0


def test_tolerance_mode_accepts_nondeterministic_replicas() -> None:
    base = np.random.default_rng(1).standard_normal(D)
    rows = np.stack([base * (1 + 1e-14 * i) for i in range(4)] + [base + 5.0])
    assert majority_vote(rows, range(5)).winner is None
    vote = majority_vote(rows, range(5), tolerance=1e-12)
    assert vote.winner in range(4) and vote.disagreeing == (4,)
    with pytest.raises(ValueError):
        majority_vote(rows, [0, 1], tolerance=-1.0)


def test_lower_bound_groups_of_2s_tie() -> None:
    """Theorem 6.5: with groups of 2s, s identical adversaries tie with the s honest nodes."""
    for s in (1, 2, 3):
        honest, forged = np.ones(D), np.full(D, 2.0)
        rows = np.stack([honest] * s + [forged] * s)
        assert majority_vote(rows, list(range(2 * s))).winner is None


# ------------------------------------------------------------------ 8.3: exact recovery

PLACEMENTS = {
    "spread": lambda code, s: [g[0] for g in code.groups][:s] or [],
    "one_group": lambda code, s: list(code.groups[0][:s]),
    "last": lambda code, s: list(range(code.num_nodes - s, code.num_nodes)),
}


@pytest.mark.parametrize(("p", "s"), [(3, 1), (9, 1), (15, 1), (15, 2), (10, 2), (15, 7)])
@pytest.mark.parametrize("kind", ATTACKS)
@pytest.mark.parametrize("placement", sorted(PLACEMENTS))
def test_exact_with_s_adversaries(p: int, s: int, kind: str, placement: str) -> None:
    code, gradients, honest = honest_round(p, s)
    adversaries = PLACEMENTS[placement](code, s)
    if len(adversaries) < s:  # fewer groups than s: put the rest anywhere else
        adversaries += [j for j in range(p) if j not in adversaries][: s - len(adversaries)]
    received = attack(honest, adversaries, kind, np.random.default_rng(2))
    clean = decode_repetition(code, honest)
    result = decode_repetition(code, received)
    assert result.total.tobytes() == clean.total.tobytes()  # bit for bit
    assert relative_error(result.total, gradients.sum(axis=0)) <= 1e-12
    assert set(result.located) == set(adversaries)
    assert result.located == result.disagreeing


@settings(max_examples=60)
@given(
    st.sampled_from([(3, 1), (9, 1), (10, 2), (15, 2), (11, 2), (15, 3)]),
    st.data(),
)
def test_matches_the_counting_reference(sizes: tuple[int, int], data: st.DataObject) -> None:
    """Any placement of up to s + 1 adversaries of any kind, some replies missing: the fast
    decoder agrees with the Counter reference (same sum, same located set) or both refuse."""
    p, s = sizes
    code, _, honest = honest_round(p, s, seed=data.draw(st.integers(0, 3)))
    bad = data.draw(st.lists(st.integers(0, p - 1), max_size=s + 1, unique=True))
    missing = set(data.draw(st.lists(st.sampled_from(bad), unique=True))) if bad else set()
    adversaries = [j for j in bad if j not in missing]
    kind = data.draw(st.sampled_from(ATTACKS))
    received = attack(honest, adversaries, kind, np.random.default_rng(len(bad)))
    expected = reference_repetition_decode(code, received, missing)
    if expected is None or len(expected[1]) > s:
        with pytest.raises(DecodingError):
            decode_repetition(code, received, erased=missing)
        return
    result = decode_repetition(code, received, erased=missing)
    assert result.total.tobytes() == expected[0].tobytes()
    assert set(result.located) == expected[1]


def test_missing_and_non_finite_replies_count_as_adversaries() -> None:
    code, gradients, honest = honest_round(15, 2)
    received = honest.copy()
    received[3] = np.nan
    received[7, 5] = np.inf
    clean = decode_repetition(code, honest)
    result = decode_repetition(code, torch.from_numpy(received))  # tensors are accepted
    assert result.total.tobytes() == clean.total.tobytes()
    assert result.located == (3, 7) and result.disagreeing == ()
    assert dict(result.screening.reasons) == {3: "non-finite", 7: "non-finite"}
    # two erasures use up s = 2: one more bad node is beyond the bound
    received[0] = 0.0
    with pytest.raises(TooManyAdversariesError) as error:
        decode_repetition(code, received)
    assert error.value.suspects == (0, 3, 7)
    missing = decode_repetition(code, honest, erased=[1, 14])
    assert missing.total.tobytes() == clean.total.tobytes() and missing.located == (1, 14)
    assert relative_error(missing.total, gradients.sum(axis=0)) <= 1e-12


def test_norm_bound_screens_huge_messages() -> None:
    code, _, honest = honest_round(9, 1)
    received = honest.copy()
    received[4] *= 1e6
    result = decode_repetition(code, received, max_norm=1e3 * float(np.abs(honest).max()) * D)
    assert result.located == (4,) and result.screening.reasons[4] == "norm above bound"


# ------------------------------------------------------------------ 8.4: beyond the bound


def test_s_plus_1_distinct_adversaries_in_a_group_raise_no_majority() -> None:
    code, _, honest = honest_round(9, 1)
    received = attack(honest, [0, 1], "gaussian", np.random.default_rng(0))
    with pytest.raises(NoMajorityError) as error:
        decode_repetition(code, received)
    assert error.value.groups == (0,)
    assert isinstance(error.value, ValueError)


def test_s_plus_1_colluders_in_one_group_win_it_undetectably() -> None:
    """The documented limit (any code, Theorem 6.5): s + 1 identical forged messages are the
    majority of a group of 2s + 1, so the wrong sum is returned and the s honest members are
    the ones located. No decoder can do better: both sides are internally consistent."""
    for s in (1, 2):
        code, gradients, honest = honest_round(5 * (2 * s + 1), s)
        colluders = list(code.groups[1][: s + 1])
        received = attack(honest, colluders, "colluding", np.random.default_rng(0))
        result = decode_repetition(code, received)
        assert relative_error(result.total, gradients.sum(axis=0)) > 1e-3
        assert set(result.located) == set(code.groups[1]) - set(colluders)


def test_more_than_s_located_nodes_raise_even_when_every_group_has_a_majority() -> None:
    """s + 1 adversaries spread over groups: each group's majority is honest, but the decoder
    cannot know that (a colluding majority elsewhere looks the same), so it refuses."""
    code, _, honest = honest_round(9, 1)
    received = attack(honest, [0, 3], "gaussian", np.random.default_rng(0))
    with pytest.raises(TooManyAdversariesError, match="more than the 1"):
        decode_repetition(code, received)


def test_every_s_subset_is_tolerated_exhaustively() -> None:
    code, _, honest = honest_round(10, 2)
    clean = decode_repetition(code, honest).total.tobytes()
    for adversaries in itertools.combinations(range(10), 2):
        received = attack(honest, list(adversaries), "reverse", np.random.default_rng(0))
        assert decode_repetition(code, received).total.tobytes() == clean


def test_bad_inputs_are_value_errors_not_decoding_errors() -> None:
    code, _, honest = honest_round(9, 1)
    with pytest.raises(ValueError, match="expected 9"):
        decode_repetition(code, honest[:8])
    with pytest.raises(ValueError, match="real"):
        decode_repetition(code, honest * 1j)
    with pytest.raises(ValueError, match="node index"):
        decode_repetition(code, honest, erased=[9])
