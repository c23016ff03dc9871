"""Shamir t-of-k secret sharing over GF(2^128), interoperable with pycryptodome.

Spec ``secagg.md`` section 4 ("Shamir details"). The field, the element encoding (16 bytes,
big-endian, the least significant bit is the constant coefficient, modulus
``x^128 + x^7 + x^2 + x + 1``) and the polynomial evaluation are those of
``Crypto.Protocol.SecretSharing.Shamir`` with ``ssss=False``: our shares combine with
pycryptodome's ``combine`` and vice versa (tested). Secrets longer than 16 bytes are split into
16-byte chunks, each shared with an independent polynomial under the same indices; a share is
``(index, chunk_share_1 | chunk_share_2 | ...)``.

Why not call pycryptodome directly: its ``combine`` recomputes the Lagrange coefficients with
128 field inversions per call (20 ms per chunk at t = 26) and its multiplication walks bits with
string operations. Here (a) sharing evaluates the polynomial at small indices, where a
multiplication by an index of a few bits is a few shifts; (b) reconstruction interpolates at
zero with coefficients ``c_j = prod_{m != j} x_m / (x_j + x_m)`` computed once per index set
(one batched inversion) and cached, so each further secret with the same index set costs ``t``
multiplications. Combining from fewer than ``t`` (or wrong) shares silently yields garbage, as
with any Shamir implementation: callers verify the result (public key or commitment check).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from flower_suite.secagg.crypto import RandomSource

CHUNK = 16
_MASK128 = (1 << 128) - 1
INDEX_BYTES = 2  # share indices 1..65535 on the wire


def _reduce(z: int) -> int:
    """Reduce a carry-less product modulo x^128 + x^7 + x^2 + x + 1 (x^128 = x^7+x^2+x+1)."""
    while z >> 128:
        high = z >> 128
        z = (z & _MASK128) ^ high ^ (high << 1) ^ (high << 2) ^ (high << 7)
    return z


def _clmul_small(a: int, small: int) -> int:
    """Carry-less product, looping over the bits of the (short) second factor."""
    z = 0
    while small:
        if small & 1:
            z ^= a
        a <<= 1
        small >>= 1
    return z


def gf_mul(a: int, b: int) -> int:
    """Product in GF(2^128) (4-bit windows over ``b``; 32 table look-ups)."""
    if b < 1 << 16:
        return _reduce(_clmul_small(a, b))
    if a < 1 << 16:
        return _reduce(_clmul_small(b, a))
    table = [0, a]
    for i in range(2, 16):
        table.append(table[i >> 1] << 1 if i % 2 == 0 else table[i - 1] ^ a)
    z = 0
    for shift in range(124, -1, -4):
        z = (z << 4) ^ table[(b >> shift) & 15]
    return _reduce(z)


def gf_inv(a: int) -> int:
    """Inverse in GF(2^128) by the binary extended Euclidean algorithm."""
    if a == 0:
        raise ZeroDivisionError("inverse of zero in GF(2^128)")
    u, v = a, (1 << 128) | 0x87
    g1, g2 = 1, 0  # invariant: g1 * a = u and g2 * a = v (mod the field polynomial)
    while u != 1:
        j = u.bit_length() - v.bit_length()
        if j < 0:
            u, v, g1, g2 = v, u, g2, g1
            j = -j
        u ^= v << j
        g1 ^= g2 << j
    return _reduce(g1)


@lru_cache(maxsize=4096)
def lagrange_at_zero(indices: tuple[int, ...]) -> tuple[int, ...]:
    """Coefficients ``c_j`` with ``f(0) = sum_j c_j f(x_j)`` for distinct nonzero ``x_j``."""
    t = len(indices)
    # numerators prod_{m != j} x_m from prefix and suffix products
    prefix = [1] * (t + 1)
    for j, x in enumerate(indices):
        prefix[j + 1] = _reduce(_clmul_small(prefix[j], x))
    suffix = [1] * (t + 1)
    for j in range(t - 1, -1, -1):
        suffix[j] = _reduce(_clmul_small(suffix[j + 1], indices[j]))
    nums = [gf_mul(prefix[j], suffix[j + 1]) for j in range(t)]
    dens = []
    for j, xj in enumerate(indices):
        den = 1
        for m, xm in enumerate(indices):
            if m != j:
                den = _reduce(_clmul_small(den, xj ^ xm))
        dens.append(den)
    # Montgomery's batch inversion: one field inversion for all t denominators
    running = [1] * (t + 1)
    for j in range(t):
        running[j + 1] = gf_mul(running[j], dens[j])
    inv = gf_inv(running[t])
    inv_dens = [0] * t
    for j in range(t - 1, -1, -1):
        inv_dens[j] = gf_mul(inv, running[j])
        inv = gf_mul(inv, dens[j])
    return tuple(gf_mul(n, d) for n, d in zip(nums, inv_dens, strict=True))


def split(
    secret: bytes, threshold: int, indices: Sequence[int], source: RandomSource
) -> list[bytes]:
    """Share ``secret`` (a multiple of 16 bytes) among ``indices``; any ``threshold`` of the
    returned shares (same order as ``indices``) reconstruct it."""
    if not secret or len(secret) % CHUNK:
        raise ValueError(f"secret length must be a positive multiple of 16, got {len(secret)}")
    if threshold < 2:
        raise ValueError(f"threshold must be >= 2, got {threshold}")
    if len(set(indices)) != len(indices) or any(not 0 < x < 1 << 16 for x in indices):
        raise ValueError("share indices must be distinct integers in [1, 65535]")
    if len(indices) < threshold:
        raise ValueError(f"{len(indices)} share holders cannot meet threshold {threshold}")
    outputs = [bytearray() for _ in indices]
    for start in range(0, len(secret), CHUNK):
        # highest-degree coefficient first, the secret last (pycryptodome's order)
        coeffs = [int.from_bytes(source.token_bytes(CHUNK), "big") for _ in range(threshold - 1)]
        coeffs.append(int.from_bytes(secret[start : start + CHUNK], "big"))
        for out, x in zip(outputs, indices, strict=True):
            # Horner in GF(2)[x], reduced once at the end (reduction is a ring homomorphism,
            # so this equals reducing at every step): value * x is a few shifts and XORs
            bits = [b for b in range(x.bit_length()) if x >> b & 1]
            value = 0
            for coeff in coeffs:
                product = 0
                for b in bits:
                    product ^= value << b
                value = product ^ coeff
            out += _reduce(value).to_bytes(CHUNK, "big")
    return [bytes(out) for out in outputs]


def combine(shares: Sequence[tuple[int, bytes]]) -> bytes:
    """Interpolate at zero from exactly the given ``(index, share)`` pairs (pass ``t`` of
    them). All shares must have the same length."""
    if not shares:
        raise ValueError("no shares to combine")
    indices = tuple(int(i) for i, _ in shares)
    if len(set(indices)) != len(indices):
        raise ValueError("duplicate share index")
    length = len(shares[0][1])
    if length == 0 or length % CHUNK or any(len(s) != length for _, s in shares):
        raise ValueError("shares must all have the same length, a multiple of 16")
    coeffs = lagrange_at_zero(indices)
    out = bytearray()
    for start in range(0, length, CHUNK):
        acc = 0
        for c, (_, share) in zip(coeffs, shares, strict=True):
            acc ^= gf_mul(c, int.from_bytes(share[start : start + CHUNK], "big"))
        out += acc.to_bytes(CHUNK, "big")
    return bytes(out)


def encode_share(index: int, share: bytes) -> bytes:
    """Fixed binary layout ``index (2 bytes, big-endian) | share`` (no pickle)."""
    return int(index).to_bytes(INDEX_BYTES, "big") + share


def decode_share(data: bytes) -> tuple[int, bytes]:
    if len(data) <= INDEX_BYTES or (len(data) - INDEX_BYTES) % CHUNK:
        raise ValueError(f"malformed share of {len(data)} bytes")
    return int.from_bytes(data[:INDEX_BYTES], "big"), data[INDEX_BYTES:]
