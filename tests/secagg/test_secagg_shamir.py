"""Shamir over GF(2^128): the fast code against pycryptodome (spec sections 4 and 12.6)."""

from __future__ import annotations

import random

import pytest
from Crypto.Protocol.SecretSharing import Shamir, _Element
from hypothesis import given, settings
from hypothesis import strategies as st

from flower_suite.secagg import SeededRandomSource, shamir
from flower_suite.secagg.crypto import generate_keypair, public_key_of


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**128 - 1), st.integers(0, 2**128 - 1))
def test_field_multiplication_matches_pycryptodome(a: int, b: int) -> None:
    assert shamir.gf_mul(a, b) == int(_Element(a) * _Element(b))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 2**128 - 1))
def test_field_inverse(a: int) -> None:
    inv = shamir.gf_inv(a)
    assert shamir.gf_mul(a, inv) == 1
    assert inv == int(_Element(a).inverse())


def test_our_shares_combine_with_pycryptodome_and_back() -> None:
    src = SeededRandomSource(7)
    secret = src.token_bytes(32)  # two chunks, shared under the same indices
    indices = list(range(1, 52))
    shares = shamir.split(secret, 26, indices, src)
    assert all(len(s) == 32 for s in shares)
    rng = random.Random(0)
    for _ in range(3):
        chosen = rng.sample(range(51), 26)
        for chunk in range(2):
            sub = [(indices[i], shares[i][16 * chunk : 16 * chunk + 16]) for i in chosen]
            assert Shamir.combine(sub) == secret[16 * chunk : 16 * chunk + 16]
        assert shamir.combine([(indices[i], shares[i]) for i in chosen]) == secret
    # pycryptodome's shares reconstruct with ours
    theirs = Shamir.split(5, 9, secret[:16])
    assert shamir.combine(theirs[2:7]) == secret[:16]
    assert shamir.combine(theirs[::2][:5]) == secret[:16]


def test_arbitrary_indices_and_cached_coefficients() -> None:
    src = SeededRandomSource(3)
    secret = src.token_bytes(16)
    indices = [3, 17, 200, 999, 65535]
    shares = shamir.split(secret, 3, indices, src)
    for subset in ([0, 1, 2], [2, 3, 4], [4, 0, 2]):
        pairs = [(indices[i], shares[i]) for i in subset]
        assert shamir.combine(pairs) == secret
        assert Shamir.combine(pairs) == secret
    before = shamir.lagrange_at_zero.cache_info().hits
    shamir.combine([(indices[i], shares[i]) for i in (0, 1, 2)])
    assert shamir.lagrange_at_zero.cache_info().hits == before + 1


def test_too_few_shares_give_a_key_that_fails_the_public_key_check() -> None:
    src = SeededRandomSource(11)
    secret, public = generate_keypair(src)
    shares = shamir.split(secret, 4, [1, 2, 3, 4, 5], src)
    assert public_key_of(shamir.combine(list(zip([1, 2, 3, 4], shares[:4], strict=True)))) == public
    wrong = shamir.combine(list(zip([1, 2, 3], shares[:3], strict=True)))
    assert wrong != secret
    assert public_key_of(wrong) != public


def test_share_encoding_and_bad_inputs() -> None:
    data = shamir.encode_share(300, bytes(range(32)))
    assert shamir.decode_share(data) == (300, bytes(range(32)))
    with pytest.raises(ValueError, match="malformed"):
        shamir.decode_share(data[:-1])
    src = SeededRandomSource(0)
    with pytest.raises(ValueError, match="multiple of 16"):
        shamir.split(b"short", 2, [1, 2], src)
    with pytest.raises(ValueError, match="distinct"):
        shamir.split(bytes(16), 2, [1, 1, 2], src)
    with pytest.raises(ValueError, match="threshold"):
        shamir.split(bytes(16), 4, [1, 2, 3], src)
    with pytest.raises(ValueError, match="duplicate"):
        shamir.combine([(1, bytes(16)), (1, bytes(16))])
