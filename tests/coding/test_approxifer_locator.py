"""ApproxIFER's error locator (spec approxifer.md §5-6, §11.4-11.6).

The batched least squares is checked against a per-coordinate ``numpy.linalg.lstsq`` loop over
the defining equations; location rates against the spec's measurements.
"""

from __future__ import annotations

import numpy as np
import pytest

from flower_suite.coding.approxifer_locator import (
    check_code_sizes,
    default_num_workers,
    locate_byzantine,
    locator_magnitudes,
    required_results,
    robust_decode,
)
from flower_suite.coding.berrut import (
    TooFewResultsError,
    berrut_decode,
    berrut_encode,
    chebyshev_second_kind,
)

_W = np.random.default_rng(7).normal(size=(20, 10))


def softmax_model(x: np.ndarray) -> np.ndarray:
    """A fixed 10-class softmax model on 20 features (spec §6's test model)."""
    z = x @ _W
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def corrupted_round(
    k: int, e: int, sigma: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, int]:
    n = 2 * (k + e) - 1
    results = softmax_model(berrut_encode(rng.normal(size=(k, 20)), n))
    bad = rng.choice(n, size=e, replace=False)
    results[bad] += rng.normal(0.0, sigma, size=(e, results.shape[1]))
    return results, np.sort(bad), n


def reference_magnitudes(
    values: np.ndarray, beta: np.ndarray, k: int, e: int, basis: str
) -> np.ndarray:
    """``|Q(β_i)|`` per coordinate from one ``lstsq`` per coordinate (spec §6 steps 1.1-1.5)."""
    m = k + e
    out = np.empty_like(values)
    for c in range(values.shape[1]):
        y = values[:, c]
        if basis == "monomial":
            powers = np.vander(beta, m, increasing=True)
            q_part = powers[:, 1:]
        else:
            powers = np.polynomial.chebyshev.chebvander(beta, m - 1)
            zero = np.polynomial.chebyshev.chebvander(np.zeros(1), m - 1)[0]
            q_part = powers[:, 1:] - zero[1:]
        rows = [np.concatenate([powers[i], -y[i] * q_part[i]]) for i in range(len(y))]
        coef = np.linalg.lstsq(np.array(rows), y, rcond=None)[0]
        out[:, c] = np.abs(1.0 + q_part @ coef[m:])
    return out


def test_result_counts_follow_the_spec() -> None:
    assert required_results(12, 0) == 12
    assert [default_num_workers(12, 0, e) for e in (1, 2, 3)] == [25, 27, 29]
    assert default_num_workers(8, 3, 0) == 11
    with pytest.raises(ValueError, match="need N >= 25"):
        check_code_sizes(12, 24, 0, 1)
    with pytest.raises(ValueError, match="S"):
        check_code_sizes(8, 9, -1, 0)
    with pytest.raises(ValueError, match="E"):
        required_results(8, -2)


@pytest.mark.parametrize("basis", ["chebyshev", "monomial"])
def test_projected_solver_matches_the_per_coordinate_reference(basis: str) -> None:
    """The fast solver eliminates P's coefficients by projection; on these ill-conditioned
    systems both are least-squares solutions that may differ slightly (monomial: up to ~6 %),
    but every coordinate's suspects (the E smallest |Q|) must be the same."""
    for seed in range(30):
        rng = np.random.default_rng(seed)
        results, _, n = corrupted_round(12, 2, 10.0, rng)
        beta = chebyshev_second_kind(n)
        fast = locator_magnitudes(results, beta, 12, 2, basis)
        slow = reference_magnitudes(results, beta, 12, 2, basis)
        assert np.array_equal(np.argsort(fast, axis=0)[:2], np.argsort(slow, axis=0)[:2])
        if basis == "chebyshev":
            assert np.allclose(fast, slow, rtol=1e-2)


@pytest.mark.parametrize("e", [1, 2, 3])
def test_locator_finds_the_corrupted_workers(e: int) -> None:
    # Prepare: σ = 10, at least 10x the softmax outputs' magnitude (spec §11.4)
    rng = np.random.default_rng(e)
    found = 0
    for _ in range(100):
        results, bad, n = corrupted_round(12, e, 10.0, rng)
        # Execute
        located = locate_byzantine(results, range(n), 12, n, e)
        found += located.flagged == tuple(int(b) for b in bad)
    # Assert
    assert found >= 95


def test_chebyshev_and_monomial_modes_agree() -> None:
    rng = np.random.default_rng(11)
    agree = 0
    for trial in range(100):
        results, _, n = corrupted_round(12, 1 + trial % 3, 10.0, rng)
        e = 1 + trial % 3
        cheb = locate_byzantine(results, range(n), 12, n, e, basis="chebyshev")
        mono = locate_byzantine(results, range(n), 12, n, e, basis="monomial")
        agree += cheb.flagged == mono.flagged
    assert agree >= 99


def test_flagged_workers_are_the_most_voted_and_votes_are_reported() -> None:
    rng = np.random.default_rng(5)
    results, bad, n = corrupted_round(12, 2, 100.0, rng)
    located = locate_byzantine(results[::-1], list(range(n))[::-1], 12, n, 2)  # any row order
    assert located.flagged == tuple(int(b) for b in bad)
    assert located.votes.shape == (n,)
    assert set(np.argsort(-located.votes, kind="stable")[:2]) == set(bad)


def test_robust_decode_equals_clean_decoding_without_the_flagged() -> None:
    rng = np.random.default_rng(9)
    results, bad, n = corrupted_round(12, 3, 100.0, rng)
    decoded = robust_decode(results, range(n), 12, n, 3)
    kept = [i for i in range(n) if i not in set(bad.tolist())]
    assert decoded.flagged == tuple(int(b) for b in bad)
    assert np.allclose(decoded.outputs, berrut_decode(results[kept], kept, 12, n), atol=1e-12)


def test_no_byzantine_bypasses_the_locator() -> None:
    rng = np.random.default_rng(2)
    values = softmax_model(berrut_encode(rng.normal(size=(8, 20)), 9))
    decoded = robust_decode(values[:8], range(8), 8, 9, 0)
    assert decoded.flagged == ()
    assert np.array_equal(decoded.outputs, berrut_decode(values[:8], range(8), 8, 9))


def test_refuses_fewer_than_2_k_plus_e_minus_1_results() -> None:
    rng = np.random.default_rng(4)
    results, _, n = corrupted_round(12, 2, 10.0, rng)
    with pytest.raises(TooFewResultsError, match="at least 27 results, got 26"):
        locate_byzantine(results[:26], range(26), 12, n, 2)


def test_no_nan_for_large_k() -> None:
    rng = np.random.default_rng(6)
    for k, e in ((40, 10), (64, 4)):
        n = 2 * (k + e) - 1
        values = rng.normal(size=(n, 10))
        beta = chebyshev_second_kind(n)
        assert np.all(np.isfinite(locator_magnitudes(values, beta, k, e, "chebyshev")))
        assert len(locate_byzantine(values, range(n), k, n, e).flagged) == e


def test_bad_input_gives_a_clear_error() -> None:
    values = np.zeros((25, 10))
    with pytest.raises(ValueError, match="basis"):
        locate_byzantine(values, range(25), 12, 25, 1, basis="legendre")
    with pytest.raises(ValueError, match="NaN"):
        locate_byzantine(np.full((25, 10), np.nan), range(25), 12, 25, 1)
    with pytest.raises(ValueError, match="one row per returned"):
        locate_byzantine(values, range(24), 12, 25, 1)
