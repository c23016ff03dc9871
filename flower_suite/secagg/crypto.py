"""Key agreement, key derivation, authenticated share encryption and randomness.

Spec ``secagg.md`` section 4: X25519 key pairs (32-byte raw keys), HKDF-SHA256 with the round
id as salt and a label per use (``enc|u|v``, ``pairmask|min|max``, ``selfmask|u``), AES-256-GCM
for the encrypted shares with ``aad = round_id | stage | sender | receiver``, so a share
cannot be moved to another pair of clients, stage or round (replay), and the OS CSPRNG for
every key, seed, nonce and the graph permutation.

Randomness goes through a :class:`RandomSource`. Production code uses
:class:`SystemRandomSource` (``os.urandom``); :class:`SeededRandomSource` is a deterministic
AES-CTR stream for tests and benchmarks only.
"""

from __future__ import annotations

import hashlib
import os
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from flower_suite.secagg.errors import SecAggError

KEY_BYTES = 32
NONCE_BYTES = 12
ID_BYTES = 4  # secure ids 1..n on the wire, big-endian


class RandomSource(Protocol):
    """Where keys, seeds, nonces and polynomial coefficients come from."""

    def token_bytes(self, n: int) -> bytes: ...


class SystemRandomSource:
    """The OS CSPRNG (spec section 4: ``os.urandom`` / ``secrets``)."""

    def token_bytes(self, n: int) -> bytes:
        return os.urandom(n)


class SeededRandomSource:
    """Deterministic AES-256-CTR stream keyed by ``SHA-256(seed)``. Tests and benchmarks only:
    anyone who knows the seed knows every key."""

    def __init__(self, seed: int | bytes) -> None:
        material = seed if isinstance(seed, bytes) else str(int(seed)).encode()
        key = hashlib.sha256(b"flower-suite seeded source|" + material).digest()
        self._stream = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()

    def token_bytes(self, n: int) -> bytes:
        return self._stream.update(bytes(n))


def randbelow(source: RandomSource, bound: int) -> int:
    """Uniform integer in ``[0, bound)`` by rejection sampling (no modulo bias)."""
    if bound < 1:
        raise ValueError(f"bound must be >= 1, got {bound}")
    bits = (bound - 1).bit_length()
    nbytes = (bits + 7) // 8 or 1
    while True:
        value = int.from_bytes(source.token_bytes(nbytes), "big") >> (8 * nbytes - bits)
        if value < bound:
            return value


def shuffle(source: RandomSource, items: list[int]) -> None:
    """Fisher-Yates shuffle in place, driven by ``source`` (a CSPRNG in production)."""
    for i in range(len(items) - 1, 0, -1):
        j = randbelow(source, i + 1)
        items[i], items[j] = items[j], items[i]


def id_bytes(secure_id: int) -> bytes:
    return int(secure_id).to_bytes(ID_BYTES, "big")


# -- key agreement and derivation -------------------------------------------------------------
def generate_keypair(source: RandomSource) -> tuple[bytes, bytes]:
    """A fresh X25519 pair ``(secret_raw, public_raw)``, 32 bytes each."""
    secret = source.token_bytes(KEY_BYTES)
    public = X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()
    return secret, public


_FIELD_PRIME = 2**255 - 19
# Any clamped scalar is a multiple of the cofactor 8, so its product with a point of small
# order is the neutral element and X25519 outputs all zeros: one exchange with this fixed key
# detects every low-order public key (cryptography refuses the all-zero result).
_PROBE = X25519PrivateKey.from_private_bytes(hashlib.sha256(b"flower-suite key probe").digest())


def check_public_key(public: object) -> None:
    """Refuse anything but a canonical X25519 public key of large order.

    A low-order key (the all-zero key, u = 1, the order-8 points) makes every agreement with it
    fail, so one client advertising it would crash each neighbour's key agreement; a
    non-canonical encoding (u >= 2**255 - 19) would let a client pass off a copy of another
    client's key as a distinct one. Honest keys from :func:`generate_keypair` always pass.
    """
    if not isinstance(public, bytes) or len(public) != KEY_BYTES:
        size = len(public) if isinstance(public, bytes) else type(public).__name__
        raise SecAggError(f"public key must be {KEY_BYTES} bytes, got {size}")
    if int.from_bytes(public, "little") >= _FIELD_PRIME:
        raise SecAggError("public key is not a canonical X25519 encoding (u >= 2**255 - 19)")
    try:
        _PROBE.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as err:
        raise SecAggError("public key is a low-order X25519 point (invalid)") from err


def public_key_of(secret: bytes) -> bytes:
    """The raw public key of a raw X25519 secret (checks a reconstructed ``s_SK``)."""
    return X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()


def private_key(secret: bytes) -> X25519PrivateKey:
    """Load a raw secret once (loading costs as much as an exchange) for many agreements."""
    return X25519PrivateKey.from_private_bytes(secret)


def agree(secret: bytes | X25519PrivateKey, peer_public: bytes) -> bytes:
    """X25519 shared secret; a low-order peer key (all-zero output) is an abort."""
    if len(peer_public) != KEY_BYTES:
        raise SecAggError(f"public key must be {KEY_BYTES} bytes, got {len(peer_public)}")
    key = private_key(secret) if isinstance(secret, bytes) else secret
    try:
        return key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as err:  # cryptography refuses an all-zero shared secret
        raise SecAggError(f"key agreement failed: {err}") from err


def hkdf(secret: bytes, *, salt: bytes, info: bytes, length: int = KEY_BYTES) -> bytes:
    """HKDF-SHA256; ``salt`` is the round id, ``info`` separates the uses."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)


def encryption_key(shared: bytes, round_id: bytes, sender: int, receiver: int) -> bytes:
    """AES-256 key for shares from ``sender`` to ``receiver`` (label ``enc|u|v``) from the
    X25519 secret ``shared = agree(c_SK_u, c_PK_v)``; each direction has its own key."""
    info = b"enc|" + id_bytes(sender) + b"|" + id_bytes(receiver)
    return hkdf(shared, salt=round_id, info=info)


def _aad(round_id: bytes, stage: int, sender: int, receiver: int) -> bytes:
    return round_id + bytes([stage]) + id_bytes(sender) + id_bytes(receiver)


def seal(
    key: bytes,
    plaintext: bytes,
    *,
    round_id: bytes,
    stage: int,
    sender: int,
    receiver: int,
    source: RandomSource,
) -> bytes:
    """``nonce12 | AES-GCM(plaintext)`` bound to (round, stage, sender, receiver)."""
    nonce = source.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, _aad(round_id, stage, sender, receiver))


def open_sealed(
    key: bytes, sealed: bytes, *, round_id: bytes, stage: int, sender: int, receiver: int
) -> bytes:
    """Decrypt :func:`seal`'s output; a tampered, misrouted or replayed one raises."""
    if len(sealed) < NONCE_BYTES + 16:
        raise SecAggError(f"ciphertext from client {sender} is truncated ({len(sealed)} bytes)")
    try:
        return AESGCM(key).decrypt(
            sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _aad(round_id, stage, sender, receiver)
        )
    except InvalidTag as err:
        raise SecAggError(
            f"share from client {sender} to {receiver} failed authentication "
            "(tampered, misrouted or replayed from another round)"
        ) from err


def seed_commitment(round_id: bytes, owner: int, seed: bytes) -> bytes:
    """``H(round | u | b_u)``: lets the server check a reconstructed self-mask seed."""
    return hashlib.sha256(b"selfmask-commit|" + round_id + id_bytes(owner) + seed).digest()
