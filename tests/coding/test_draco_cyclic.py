"""Cyclic code: structure, exact recovery, NaN and beyond the bound (spec draco.md 8.5-8.8).

Every exactness check compares with the adversary-free sum ``Σ_k g_k``; the brute-force
reference in ``draco_reference.py`` checks the fast locator on small codes.
"""

from __future__ import annotations

import numpy as np
import pytest
from draco_reference import (
    attack,
    colluding_codeword,
    reference_cyclic_decode,
    relative_error,
    spec_encoding_matrix,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from flower_suite.coding import (
    DEFAULT_TOLERANCE,
    DecodingError,
    InconsistentMessagesError,
    TooManyAdversariesError,
    allocation_matrix,
    decode_cyclic,
    encode_cyclic,
    make_cyclic_code,
)

D = 1000
SIZES = [(p, s) for p in (3, 5, 7, 9, 15) for s in range((p - 1) // 2 + 1)]
ATTACKS = ("constant", "reverse", "gaussian", "tiny")


def honest_round(
    p: int, s: int, seed: int = 0, d: int = D
) -> tuple[object, np.ndarray, np.ndarray]:
    code = make_cyclic_code(p, s)
    gradients = np.random.default_rng(seed).standard_normal((p, d))
    return code, gradients, encode_cyclic(code, gradients)


# ------------------------------------------------------------------ 8.5: structure


@pytest.mark.parametrize(("p", "s"), SIZES)
def test_encoding_matrix_structure(p: int, s: int) -> None:
    code = make_cyclic_code(p, s)
    w = code.encoding_matrix
    holds = allocation_matrix(code.assignment, p).T.astype(bool)  # holds[k, j]: j holds k
    assert (w[~holds] == 0).all()  # exact zeros where node j lacks partition k
    assert (w[holds] != 0).all()
    # the closed form equals the spec's Vandermonde construction
    assert np.abs(w - spec_encoding_matrix(p, s)).max() <= 1e-12 * np.abs(w).max()
    z = encode_cyclic(code, np.random.default_rng(0).standard_normal((p, 200)))
    parity = z.T @ code.upper_fourier.conj().T  # Z·C_Rᴴ in the text's orientation
    assert np.linalg.norm(parity) <= 1e-13 * np.linalg.norm(z)
    assert not w.flags.writeable


# ------------------------------------------------------------------ 8.6: exact recovery


def _adversaries(p: int, count: int, seed: int) -> list[int]:
    return sorted(np.random.default_rng(seed).choice(p, count, replace=False).tolist())


@pytest.mark.parametrize(("p", "s"), [(p, s) for p, s in SIZES if s > 0])
def test_exact_and_located_with_up_to_s_adversaries(p: int, s: int) -> None:
    code, gradients, honest = honest_round(p, s)
    truth = gradients.sum(axis=0)
    rng = np.random.default_rng(p * 100 + s)
    for count in sorted({0, 1, s}):
        for kind in ATTACKS:
            adversaries = _adversaries(p, count, seed=count + 10 * s)
            result = decode_cyclic(code, attack(honest, adversaries, kind, rng), rng=rng)
            assert relative_error(result.total, truth) <= 1e-9, (count, kind)
            assert result.located == tuple(adversaries), (count, kind)
            assert set(result.located) <= set(result.excluded) and len(result.excluded) == s
            assert result.residual <= 1e-13 and result.imaginary_part <= 1e-12


def test_worst_error_over_every_size_and_attack_is_tiny() -> None:
    """The spec's prototype reached 1e-13 over P in {3,...,15}; so must we (record it)."""
    worst = 0.0
    rng = np.random.default_rng(7)
    for p, s in SIZES:
        code, gradients, honest = honest_round(p, s, seed=p + s, d=300)
        for kind in ATTACKS:
            received = attack(honest, _adversaries(p, s, seed=p), kind, rng)
            result = decode_cyclic(code, received, rng=rng)
            worst = max(worst, relative_error(result.total, gradients.sum(axis=0)))
    assert worst <= 1e-12


# ------------------------------------------------------------------ 8.7: NaN, Inf, missing


def test_non_finite_and_missing_messages_are_erasures() -> None:
    code, gradients, honest = honest_round(15, 3)
    truth = gradients.sum(axis=0)
    received = attack(honest, [9], "reverse", np.random.default_rng(0))
    received[2] = np.nan
    received[5, 17] = np.inf + 0j
    result = decode_cyclic(code, received, erased=[], rng=np.random.default_rng(1))
    assert relative_error(result.total, truth) <= 1e-9
    assert result.located == (2, 5, 9)
    assert dict(result.screening.reasons) == {2: "non-finite", 5: "non-finite"}
    missing = decode_cyclic(code, honest, erased=[0, 14], rng=np.random.default_rng(1))
    assert relative_error(missing.total, truth) <= 1e-9 and missing.located == (0, 14)
    received[12] = np.nan  # 3 erasures use up s = 3, with adversary 9 beyond the bound
    with pytest.raises(InconsistentMessagesError):
        decode_cyclic(code, received, rng=np.random.default_rng(1))
    received[11] = np.nan  # 4 erasures: refused before any decoding
    with pytest.raises(TooManyAdversariesError):
        decode_cyclic(code, received, rng=np.random.default_rng(1))


def test_unscreened_nan_cannot_reach_the_locator() -> None:
    """The spec's failure (one NaN column crashes the locator) cannot happen: screening runs
    inside the decoder, and a NaN node beyond the budget is an error, not a crash."""
    code, _, honest = honest_round(5, 0)
    received = honest.copy()
    received[1, 3] = np.nan
    with pytest.raises(TooManyAdversariesError, match="more than the 0"):
        decode_cyclic(code, received)


@pytest.mark.parametrize("loudness", [1e4, 1e10, 1e150])
def test_a_huge_message_cannot_hide_a_second_adversary(loudness: float) -> None:
    """Two adversaries within s = 3: one sends a huge message, one a small perturbation.
    The huge one is erased by the median-norm screen, the small one is still located. Without
    that screen the decoder may fail (its syndromes drown in the huge one's rounding errors),
    but never silently: the residual is measured against the kept messages only."""
    code, gradients, honest = honest_round(15, 3)
    truth = gradients.sum(axis=0)
    received = honest.copy()
    received[2] *= loudness
    received[8] += 1e-3 * np.random.default_rng(1).standard_normal(D)
    result = decode_cyclic(code, received, rng=np.random.default_rng(0))
    assert relative_error(result.total, truth) <= 1e-9 and result.located == (2, 8)
    try:
        unscreened = decode_cyclic(
            code, received, max_norm_ratio=None, rng=np.random.default_rng(0)
        )
    except DecodingError:
        assert loudness > 1e6
    else:
        assert relative_error(unscreened.total, truth) <= 1e-9


# ------------------------------------------------------------------ 8.8: beyond the bound


@pytest.mark.parametrize(("p", "s"), [(p, s) for p, s in SIZES if 0 < s < (p - 1) / 2])
@pytest.mark.parametrize("kind", ["constant", "reverse", "gaussian"])
def test_s_plus_1_adversaries_are_detected(p: int, s: int, kind: str) -> None:
    """Spec 8.8 asks for a wrong sum in >= 95% of 20 seeds; we require a DecodingError in
    every one of them (never a wrong sum)."""
    code, _, honest = honest_round(p, s, d=200)
    for seed in range(20):
        received = attack(honest, _adversaries(p, s + 1, seed), kind, np.random.default_rng(seed))
        with pytest.raises(InconsistentMessagesError) as error:
            decode_cyclic(code, received, rng=np.random.default_rng(seed))
        assert error.value.residual > DEFAULT_TOLERANCE


@pytest.mark.parametrize(("p", "s"), [(5, 1), (7, 2), (9, 1), (9, 4), (15, 3), (15, 7)])
def test_s_plus_1_omniscient_colluders_are_undetectable(p: int, s: int) -> None:
    """What is *not* guaranteed (the spec only says so for s = (P − 1)/2): the code's minimum
    distance is 2s + 1, so s + 1 colluders who know the honest messages add ``v·w_j`` for a
    codeword ``w`` vanishing outside them and s honest nodes. The received word is then a
    different codeword, off in s honest places: it decodes without error to ``G·1 + √P·v``
    and blames the honest nodes."""
    code, gradients, honest = honest_round(p, s, d=50)
    colluders, blamed = list(range(s + 1)), list(range(s + 1, 2 * s + 1))
    w = colluding_codeword(code, colluders + blamed)
    v = np.random.default_rng(3).standard_normal(50)
    received = honest.copy()
    for j in colluders:
        received[j] += w[j] * v
    result = decode_cyclic(code, received, rng=np.random.default_rng(0))
    assert relative_error(result.total, gradients.sum(axis=0) + np.sqrt(p) * v) <= 1e-9
    assert result.located == tuple(blamed)


# ------------------------------------------------------------------ fast vs brute force


@settings(max_examples=40)
@given(st.sampled_from([(p, s) for p, s in SIZES if p <= 9]), st.data())
def test_fast_decoder_agrees_with_brute_force(sizes: tuple[int, int], data: st.DataObject) -> None:
    p, s = sizes
    code, gradients, honest = honest_round(p, s, seed=data.draw(st.integers(0, 5)), d=40)
    adversaries = data.draw(st.lists(st.integers(0, p - 1), max_size=s + 1, unique=True))
    kind = data.draw(st.sampled_from(["constant", "reverse", "gaussian", "colluding"]))
    received = attack(honest, adversaries, kind, np.random.default_rng(len(adversaries)))
    expected = reference_cyclic_decode(code, received)
    if expected is None:
        with pytest.raises(DecodingError):
            decode_cyclic(code, received, rng=np.random.default_rng(0))
        return
    result = decode_cyclic(code, received, rng=np.random.default_rng(0))
    assert np.linalg.norm(result.total - expected[0]) <= 1e-9 * np.linalg.norm(expected[0])
    if len(adversaries) <= s:
        assert relative_error(result.total, gradients.sum(axis=0)) <= 1e-9


def test_locator_vector_is_fresh_and_secret_by_default() -> None:
    code, gradients, honest = honest_round(7, 2)
    first = decode_cyclic(code, honest)
    second = decode_cyclic(code, honest)
    assert relative_error(first.total, gradients.sum(axis=0)) <= 1e-12
    assert relative_error(second.total, first.total) <= 1e-12


def test_bad_inputs_are_value_errors() -> None:
    code, _, honest = honest_round(7, 2)
    with pytest.raises(ValueError, match="expected 7"):
        decode_cyclic(code, honest[:6])
    with pytest.raises(ValueError, match="tolerance"):
        decode_cyclic(code, honest, tolerance=0.0)
    with pytest.raises(ValueError, match="2-D"):
        decode_cyclic(code, honest[0])
    zero = decode_cyclic(code, np.zeros_like(honest))
    assert (zero.total == 0).all() and zero.located == ()
