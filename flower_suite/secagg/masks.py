"""Masks: a 32-byte seed expanded by AES-128-CTR straight into unsigned modular arithmetic.

Spec ``secagg.md`` section 4 ("PRG requirements") and section 5, step 4. For each expansion the
AES key is ``HKDF(seed, salt=round_id, info=label | length | log2 M)``, the counter starts at
zero and the keystream is read as little-endian ``uint32`` (``M <= 2**32``) or ``uint64``. Only
the low ``log2 M`` bits matter: ``M`` divides ``2**32`` / ``2**64``, so numpy's native unsigned
wraparound computes every sum modulo ``M`` for free and masks are exactly uniform on
``[0, M)`` (Flower's ``randint(0, M-1)`` never emits ``M-1`` and has a 32-bit seed).

Labels: ``selfmask|u`` for ``PRG(b_u)``; ``pairmask|min(u,v)|max(u,v)`` for the pairwise mask
from the X25519 secret ``s_uv``. A client adds ``+PRG(s_uv)`` when ``u > v`` and ``-PRG(s_uv)``
when ``u < v``, so pairwise masks cancel in the sum.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from flower_suite.secagg.crypto import hkdf, id_bytes

AES_KEY_BYTES = 16
_ZERO_NONCE = bytes(16)


def mask_key(seed: bytes, *, round_id: bytes, label: bytes, length: int, mod_bits: int) -> bytes:
    """The AES-128 key of one expansion (binds round, use, vector length and modulus)."""
    info = label + b"|" + int(length).to_bytes(8, "big") + b"|" + bytes([mod_bits])
    return hkdf(seed, salt=round_id, info=info, length=AES_KEY_BYTES)


def keystream(key: bytes, length: int, dtype: np.dtype) -> np.ndarray:
    """``length`` little-endian words of AES-128-CTR keystream (counter block 0, 1, ...)."""
    dtype = np.dtype(dtype).newbyteorder("<")
    nbytes = length * dtype.itemsize
    encryptor = Cipher(algorithms.AES(key), modes.CTR(_ZERO_NONCE)).encryptor()
    buffer = bytearray(nbytes + 15)  # update_into needs block_size - 1 spare bytes
    written = encryptor.update_into(bytes(nbytes), buffer)
    return np.frombuffer(buffer, dtype=dtype, count=written // dtype.itemsize)


def self_mask_label(owner: int) -> bytes:
    return b"selfmask|" + id_bytes(owner)


def pair_mask_label(u: int, v: int) -> bytes:
    return b"pairmask|" + id_bytes(min(u, v)) + b"|" + id_bytes(max(u, v))


def pair_sign(u: int, v: int) -> int:
    """``δ_uv``: +1 when ``u > v``, -1 when ``u < v`` (spec section 5, step 4)."""
    if u == v:
        raise ValueError("no pairwise mask with oneself")
    return 1 if u > v else -1


def add_mask(
    acc: np.ndarray,
    seed: bytes,
    *,
    sign: int,
    round_id: bytes,
    label: bytes,
    mod_bits: int,
) -> None:
    """``acc += sign * PRG(seed)`` in place, modulo ``2**(8 * itemsize)`` (hence modulo M)."""
    key = mask_key(seed, round_id=round_id, label=label, length=acc.size, mod_bits=mod_bits)
    stream = keystream(key, acc.size, acc.dtype)
    if sign > 0:
        np.add(acc, stream, out=acc)
    else:
        np.subtract(acc, stream, out=acc)


def pack(vector: np.ndarray, mod_bits: int) -> bytes:
    """Reduce modulo ``2**mod_bits`` and keep ``ceil(mod_bits / 8)`` little-endian bytes per
    entry (3 bytes at ``M = 2**24``, 4 at ``2**32``; Flower sends 8)."""
    width = (mod_bits + 7) // 8
    reduced = vector.astype(vector.dtype.newbyteorder("<"), copy=False)
    if mod_bits < 8 * vector.dtype.itemsize:
        reduced = reduced & reduced.dtype.type((1 << mod_bits) - 1)
    raw = np.ascontiguousarray(reduced).view(np.uint8).reshape(-1, vector.dtype.itemsize)
    return raw[:, :width].tobytes()


def unpack(data: bytes, length: int, mod_bits: int, dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`pack`; raises ``ValueError`` on a wrong size."""
    dtype = np.dtype(dtype)
    width = (mod_bits + 7) // 8
    if len(data) != length * width:
        raise ValueError(
            f"masked vector has {len(data)} bytes, expected {length} entries x {width} bytes"
        )
    raw = np.zeros((length, dtype.itemsize), dtype=np.uint8)
    raw[:, :width] = np.frombuffer(data, dtype=np.uint8).reshape(length, width)
    return raw.view(dtype.newbyteorder("<")).reshape(length).astype(dtype, copy=False)
