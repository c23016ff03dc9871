"""Berrut coding of ApproxIFER (spec approxifer.md §2, §4, §11.1-11.2, §11.6).

The fast matrices are compared with a slow loop over the defining formula; the exact properties
(rows summing to 1, constants, affine maps, no NaN) are checked to 1e-10, and the approximation
errors against the spec's bounds on identity, tanh and a fixed random MLP.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flower_suite.coding.berrut import (
    MAX_QUERIES,
    TooFewResultsError,
    berrut_basis,
    berrut_decode,
    berrut_encode,
    chebyshev_first_kind,
    chebyshev_second_kind,
    decoding_matrix,
    encoding_matrix,
)


def reference_basis(nodes: list[float], z: float) -> list[float]:
    """``l_m(z)`` by the textbook formula, one scalar at a time (signs by position in nodes)."""
    for m, node in enumerate(nodes):
        if z == node:
            return [1.0 if k == m else 0.0 for k in range(len(nodes))]
    terms = [(-1.0) ** m / (z - node) for m, node in enumerate(nodes)]
    total = sum(terms)
    return [t / total for t in terms]


def reference_encoding(k: int, n: int) -> np.ndarray:
    alpha = [math.cos((2 * j + 1) * math.pi / (2 * k)) for j in range(k)]
    beta = [math.cos(i * math.pi / n) for i in range(n)]
    return np.array([reference_basis(alpha, b) for b in beta])


def reference_decoding(k: int, n: int, returned: list[int]) -> np.ndarray:
    beta = [math.cos(i * math.pi / n) for i in sorted(returned)]
    alpha = [math.cos((2 * j + 1) * math.pi / (2 * k)) for j in range(k)]
    return np.array([reference_basis(beta, a) for a in alpha])


def test_points_follow_the_spec_formulas() -> None:
    assert np.allclose(chebyshev_first_kind(4), np.cos(np.array([1, 3, 5, 7]) * np.pi / 8))
    assert np.allclose(chebyshev_second_kind(4), np.cos(np.arange(4) * np.pi / 4))
    lobatto = chebyshev_second_kind(5, "cheb2_lobatto")
    assert lobatto[0] == 1.0 and lobatto[-1] == pytest.approx(-1.0)


@pytest.mark.parametrize(("k", "n"), [(1, 1), (3, 4), (8, 9), (8, 11), (12, 13), (12, 25)])
def test_encoding_matrix_matches_the_slow_reference(k: int, n: int) -> None:
    assert np.allclose(encoding_matrix(k, n), reference_encoding(k, n), atol=1e-12)


@pytest.mark.parametrize(
    ("k", "n", "returned"),
    [(8, 9, [0, 1, 2, 3, 4, 5, 6, 8]), (8, 11, [1, 2, 4, 5, 6, 7, 9, 10]), (4, 9, [8, 0, 3, 5])],
)
def test_decoding_signs_alternate_by_rank_in_the_returned_set(
    k: int, n: int, returned: list[int]
) -> None:
    # Execute
    fast = decoding_matrix(k, n, returned)
    # Assert: the reference alternates by rank; alternating by worker index differs when a gap
    # in the returned set breaks the parity (and can create a pole).
    assert np.allclose(fast, reference_decoding(k, n, returned), atol=1e-12)
    beta = np.cos(np.array(sorted(returned)) * np.pi / n)
    by_index = (-1.0) ** np.array(sorted(returned))
    terms = by_index / (chebyshev_first_kind(k)[:, None] - beta[None, :])
    wrong = terms / terms.sum(axis=1, keepdims=True)
    assert not np.allclose(fast, wrong)


def test_coincident_point_gives_the_unit_row() -> None:
    # β_4 = cos(4π/32) = α_1 = cos(3π/24) for K = 12, N = 32 (N(2j+1) = 2Ki).
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0/0 or x/0 on the way, not even a warning
        a = berrut_basis(chebyshev_first_kind(12), chebyshev_second_kind(32))
    assert np.all(np.isfinite(a))
    expected = np.zeros(12)
    expected[1] = 1.0
    assert np.array_equal(a[4], expected)


def _no_nan_cases() -> list[tuple[int, int]]:
    cases = {(12, n) for n in range(12, 513)}
    for k in range(1, 65):
        cases |= {(k, n) for n in (k, k + 1, 2 * k, 2 * k + 1, 4 * k, 8 * k, 512) if n <= 512}
    return sorted(cases)


def test_no_nan_and_rows_sum_to_one_for_k_up_to_64() -> None:
    for k, n in _no_nan_cases():
        a = encoding_matrix(k, n)
        assert np.all(np.isfinite(a)), (k, n)
        assert np.allclose(a.sum(axis=1), 1.0, atol=1e-10), (k, n)
        b = decoding_matrix(k, n, range(n - k, n) if n > k else range(n))
        assert np.all(np.isfinite(b)) and np.allclose(b.sum(axis=1), 1.0, atol=1e-10), (k, n)


@settings(max_examples=60)
@given(
    k=st.integers(1, 64),
    extra=st.integers(0, 64),
    seed=st.integers(0, 2**16),
    points=st.sampled_from(["cheb2_N", "cheb2_lobatto"]),
)
@example(k=12, extra=20, seed=0, points="cheb2_N")  # coincident points (K = 12, N = 32)
@example(k=1, extra=0, seed=0, points="cheb2_N")
def test_exact_properties(k: int, extra: int, seed: int, points: str) -> None:
    # Prepare
    n = max(k + extra, 2)
    rng = np.random.default_rng(seed)
    size = int(rng.integers(1, n + 1))
    returned = rng.choice(n, size=size, replace=False)
    queries = rng.normal(size=(k, 3, 2))
    scale, shift = rng.normal(size=(3, 2)), rng.normal(size=(3, 2))
    constant = np.broadcast_to(rng.normal(size=(1, 5)), (k, 5))
    # Execute
    a = encoding_matrix(k, n, points)
    b = decoding_matrix(k, n, returned, points, min_results=1)
    coded_affine = berrut_encode(scale * queries + shift, n, points)
    coded_constant = berrut_encode(constant, n, points)
    results = np.broadcast_to(constant[:1], (size, 5))
    decoded_constant = berrut_decode(results, returned, k, n, points, min_results=1)
    # Assert
    assert np.allclose(a.sum(axis=1), 1.0, atol=1e-10)
    assert np.allclose(b.sum(axis=1), 1.0, atol=1e-10)
    assert np.allclose(coded_affine, scale * berrut_encode(queries, n, points) + shift, atol=1e-10)
    assert np.allclose(coded_constant, constant[0], atol=1e-10)
    assert np.allclose(decoded_constant, constant[0], atol=1e-10)


def test_decode_accepts_any_row_order() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=(8, 4))
    returned = [7, 0, 3, 1, 2, 5, 8, 4]
    order = np.argsort(returned)
    sorted_decode = berrut_decode(values[order], sorted(returned), 8, 9)
    assert np.allclose(berrut_decode(values, returned, 8, 9), sorted_decode, atol=1e-14)


# A fixed random 2-layer MLP, tanh and the identity (spec §11.2).
_MLP_RNG = np.random.default_rng(123)
_W1, _W2 = _MLP_RNG.normal(size=(16, 32)) / 4.0, _MLP_RNG.normal(size=(32, 10)) / 6.0
FUNCTIONS = {
    "identity": lambda x: x,
    "tanh": np.tanh,
    "mlp": lambda x: np.maximum(x @ _W1, 0.0) @ _W2,
}


def mean_relative_error(name: str, k: int, n: int, trials: int = 200, seed: int = 0) -> float:
    """Mean of ``||Ŷ - f(X)|| / ||f(X)||`` over trials, one random straggler each (S = 1)."""
    f = FUNCTIONS[name]
    rng = np.random.default_rng(seed)
    errors = []
    for _ in range(trials):
        queries = rng.normal(size=(k, 16))
        coded = f(berrut_encode(queries, n))
        dropped = int(rng.integers(n))
        returned = [i for i in range(n) if i != dropped]
        decoded = berrut_decode(coded[returned], returned, k, n)
        exact = f(queries)
        errors.append(np.linalg.norm(decoded - exact) / np.linalg.norm(exact))
    return float(np.mean(errors))


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("k", [8, 12])
def test_approximation_error_bounds(name: str, k: int) -> None:
    # Execute
    err = {n: mean_relative_error(name, k, n) for n in (2 * k + 1, 4 * k + 1, 8 * k + 1)}
    # Assert (spec §11.2; identity at K = 8 measured 0.042 / 0.019 in the spec)
    assert err[4 * k + 1] <= 0.06
    assert err[8 * k + 1] <= 0.03
    assert err[4 * k + 1] / err[2 * k + 1] <= 0.7
    assert err[8 * k + 1] / err[4 * k + 1] <= 0.7


def test_identity_error_matches_the_spec_measurement() -> None:
    # Spec §4: 0.41 (N = 9), 0.10 (N = 17), 0.042 (N = 33) for K = 8, S = 1.
    measured = [mean_relative_error("identity", 8, n) for n in (9, 17, 33)]
    assert measured == pytest.approx([0.41, 0.10, 0.042], rel=0.2)


def test_refuses_too_few_results() -> None:
    values = np.zeros((7, 3))
    with pytest.raises(TooFewResultsError, match="at least 8 results, got 7"):
        berrut_decode(values, range(7), 8, 9)
    with pytest.raises(TooFewResultsError):
        decoding_matrix(8, 9, [])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: encoding_matrix(0, 4), "K"),
        (lambda: encoding_matrix(MAX_QUERIES + 1, 5000), "K"),
        (lambda: encoding_matrix(8, 7), "N"),
        (lambda: encoding_matrix(8, 10_000), "N"),
        (lambda: encoding_matrix(8, 9, "cheb3"), "points"),
        (lambda: decoding_matrix(4, 5, [0, 1, 1, 2]), "distinct"),
        (lambda: decoding_matrix(4, 5, [0, 1, 2, 5]), "outside"),
        (lambda: berrut_encode(np.full((4, 2), np.nan), 5), "NaN"),
        (lambda: berrut_decode(np.full((4, 2), np.inf), range(4), 4, 5), "NaN"),
        (lambda: berrut_decode(np.zeros((3, 2)), range(4), 4, 5), "one row per returned"),
    ],
)
def test_bad_input_gives_a_clear_error(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]
