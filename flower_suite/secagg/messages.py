"""Typed protocol messages and their record-friendly dict form.

Spec ``secagg.md`` section 6. Every message carries the round id (16 random bytes chosen by the
server per round, so nothing replays across rounds), the stage and the protocol version.
``to_dict()`` gives only ``int``/``float``/``bool``/``bytes`` values (lists of ids and of
ciphertexts are packed into bytes with a fixed binary layout: no pickle, no empty lists, no
64-bit overflow), so the Flower layer stores it as one ``ConfigRecord``; ``from_dict`` checks
types, stage and version and raises :class:`SecAggError` on anything malformed.

Stages 0 (setup) and 1 (advertise keys) share one round trip, as in Flower: the reply to
:class:`SetupRequest` is :class:`AdvertiseKeys`.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any, ClassVar, TypeVar

import numpy as np

from flower_suite.secagg.errors import SecAggError
from flower_suite.secagg.params import SecAggParams

# 2: AdvertiseKeys echoes a digest of the setup message (parameters bound to the round)
PROTOCOL_VERSION = 2


class Stage(IntEnum):
    """The five logical stages (Salvia, seed 002 lines 81-89)."""

    SETUP = 0
    ADVERTISE_KEYS = 1
    SHARE_KEYS = 2
    MASKED_INPUT = 3
    UNMASK = 4

    @property
    def label(self) -> str:
        return self.name.lower()


def pack_ids(ids: list[int] | tuple[int, ...]) -> bytes:
    """Secure ids / indices as big-endian uint32."""
    return np.asarray(ids, dtype=">u4").tobytes()


def unpack_ids(data: bytes) -> list[int]:
    if len(data) % 4:
        raise SecAggError(f"id list of {len(data)} bytes is not a multiple of 4")
    return np.frombuffer(data, dtype=">u4").astype(int).tolist()


def pack_blobs(blobs: list[bytes]) -> bytes:
    """``len (uint32 big-endian) | bytes`` for each blob."""
    return b"".join(struct.pack(">I", len(b)) + b for b in blobs)


def unpack_blobs(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise SecAggError("truncated blob list")
        (size,) = struct.unpack_from(">I", data, pos)
        pos += 4
        if pos + size > len(data):
            raise SecAggError("truncated blob list")
        out.append(bytes(data[pos : pos + size]))
        pos += size
    return out


M = TypeVar("M", bound="Message")

_CHECKS: dict[str, type | tuple[type, ...]] = {
    "int": int,
    "float": (int, float),
    "bool": bool,
    "bytes": bytes,
    "ids": bytes,
    "blobs": bytes,
}


@dataclass(frozen=True)
class Message:
    """Base: ``round_id`` plus the per-class ``KINDS`` (field -> wire kind)."""

    STAGE: ClassVar[Stage]
    KINDS: ClassVar[dict[str, str]] = {}

    round_id: bytes

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "stage": int(self.STAGE),
            "version": PROTOCOL_VERSION,
            "round_id": self.round_id,
        }
        for name, kind in self.KINDS.items():
            value = getattr(self, name)
            if kind == "ids":
                value = pack_ids(value)
            elif kind == "blobs":
                value = pack_blobs(list(value))
            out[name] = value
        return out

    @classmethod
    def from_dict(cls: type[M], data: dict[str, Any]) -> M:
        if data.get("version") != PROTOCOL_VERSION:
            raise SecAggError(f"unsupported secagg protocol version {data.get('version')!r}")
        if data.get("stage") != int(cls.STAGE):
            raise SecAggError(
                f"expected a {cls.STAGE.label} message (stage {int(cls.STAGE)}), "
                f"got stage {data.get('stage')!r}"
            )
        values: dict[str, Any] = {}
        for name, kind in {"round_id": "bytes", **cls.KINDS}.items():
            if name not in data:
                raise SecAggError(f"{cls.__name__}: missing field {name!r}")
            value = data[name]
            if not isinstance(value, _CHECKS[kind]) or (kind == "int" and isinstance(value, bool)):
                raise SecAggError(
                    f"{cls.__name__}.{name}: expected {kind}, got {type(value).__name__}"
                )
            # (ids and blobs travel as bytes: checked just above)
            if kind == "ids" and isinstance(value, bytes):
                value = tuple(unpack_ids(value))
            elif kind == "blobs" and isinstance(value, bytes):
                value = tuple(unpack_blobs(value))
            values[name] = value
        return cls(**values)

    def wire_bytes(self) -> int:
        """Payload size: bytes of the dict values (8 per number), as a ConfigRecord counts."""
        total = 0
        for key, value in self.to_dict().items():
            total += len(key) + (len(value) if isinstance(value, bytes) else 8)
        return total


@dataclass(frozen=True)
class SetupRequest(Message):
    """Stage 0, server -> client: the round's parameters and the client's secure id."""

    STAGE: ClassVar[Stage] = Stage.SETUP
    KINDS: ClassVar[dict[str, str]] = {"secure_id": "int", "params": "params"}

    secure_id: int
    params: SecAggParams

    def to_dict(self) -> dict[str, Any]:
        out = {"stage": int(self.STAGE), "version": PROTOCOL_VERSION, "round_id": self.round_id}
        out["secure_id"] = self.secure_id
        out.update({f"p_{k}": v for k, v in self.params.to_dict().items()})
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SetupRequest:
        if data.get("version") != PROTOCOL_VERSION or data.get("stage") != int(Stage.SETUP):
            raise SecAggError("expected a setup message of this protocol version")
        round_id, secure_id = data.get("round_id"), data.get("secure_id")
        if not isinstance(round_id, bytes) or not isinstance(secure_id, int):
            raise SecAggError("setup message needs round_id (bytes) and secure_id (int)")
        names = {f.name for f in fields(SecAggParams)}
        try:  # the client validates the server's parameters too (spec section 2)
            params = SecAggParams.from_dict({n: data.get(f"p_{n}") for n in names})
        except (ValueError, TypeError) as err:
            raise SecAggError(f"invalid secagg parameters from the server: {err}") from err
        return cls(round_id=round_id, secure_id=secure_id, params=params)


def setup_digest(request: SetupRequest) -> bytes:
    """SHA-256 of the setup message as the client understood it (round, secure id, every
    parameter). The client echoes it with its keys; the server drops a client whose digest
    differs from its own, so a client that was sent (or kept) other parameters than the rest
    cannot put an input on another scale into the sum."""
    canonical = json.dumps(request.params.to_dict(), sort_keys=True).encode()
    return hashlib.sha256(
        b"secagg-setup|" + request.round_id + struct.pack(">I", request.secure_id) + canonical
    ).digest()


@dataclass(frozen=True)
class AdvertiseKeys(Message):
    """Stage 1, client -> server: ``c_PK`` (share encryption), ``s_PK`` (pairwise masks) and
    the digest of the setup message it answers (:func:`setup_digest`)."""

    STAGE: ClassVar[Stage] = Stage.ADVERTISE_KEYS
    KINDS: ClassVar[dict[str, str]] = {"c_pk": "bytes", "s_pk": "bytes", "setup_digest": "bytes"}

    c_pk: bytes
    s_pk: bytes
    setup_digest: bytes = b""


@dataclass(frozen=True)
class ShareKeysRequest(Message):
    """Stage 2, server -> client u: keys of ``N(u) ∩ U1`` (u included) and their indices."""

    STAGE: ClassVar[Stage] = Stage.SHARE_KEYS
    KINDS: ClassVar[dict[str, str]] = {
        "ids": "ids",
        "indices": "ids",
        "c_pks": "blobs",
        "s_pks": "blobs",
    }

    ids: tuple[int, ...]
    indices: tuple[int, ...]
    c_pks: tuple[bytes, ...]
    s_pks: tuple[bytes, ...]


@dataclass(frozen=True)
class ShareKeysReply(Message):
    """Stage 2, client -> server: encrypted shares per destination, commitment ``H(b_u)``."""

    STAGE: ClassVar[Stage] = Stage.SHARE_KEYS
    KINDS: ClassVar[dict[str, str]] = {"dsts": "ids", "ciphertexts": "blobs", "commitment": "bytes"}

    dsts: tuple[int, ...]
    ciphertexts: tuple[bytes, ...]
    commitment: bytes


@dataclass(frozen=True)
class MaskedInputRequest(Message):
    """Stage 3, server -> client u: the shares addressed to u, from ``N(u) ∩ U2``."""

    STAGE: ClassVar[Stage] = Stage.MASKED_INPUT
    KINDS: ClassVar[dict[str, str]] = {"srcs": "ids", "ciphertexts": "blobs"}

    srcs: tuple[int, ...]
    ciphertexts: tuple[bytes, ...]


@dataclass(frozen=True)
class MaskedInputReply(Message):
    """Stage 3, client -> server: ``y_u`` packed to ``ceil(log2 M / 8)`` bytes per entry.

    ``clipped_fraction`` is the one plaintext statistic (the fraction of this client's entries
    that were clipped; -1 when the client does not report it)."""

    STAGE: ClassVar[Stage] = Stage.MASKED_INPUT
    KINDS: ClassVar[dict[str, str]] = {
        "masked": "bytes",
        "length": "int",
        "clipped_fraction": "float",
    }

    masked: bytes
    length: int
    clipped_fraction: float = -1.0


@dataclass(frozen=True)
class UnmaskRequest(Message):
    """Stage 4, server -> client u ∈ U3: ``alive = N(u) ∩ U3``, ``dropped = N(u) ∩ (U2 \\ U3)``."""

    STAGE: ClassVar[Stage] = Stage.UNMASK
    KINDS: ClassVar[dict[str, str]] = {"alive": "ids", "dropped": "ids"}

    alive: tuple[int, ...]
    dropped: tuple[int, ...]


@dataclass(frozen=True)
class UnmaskReply(Message):
    """Stage 4, client -> server: ``b``-shares of the alive, ``s_SK``-shares of the dropped
    (each share encoded as ``index | bytes``)."""

    STAGE: ClassVar[Stage] = Stage.UNMASK
    KINDS: ClassVar[dict[str, str]] = {
        "b_owners": "ids",
        "b_shares": "blobs",
        "s_owners": "ids",
        "s_shares": "blobs",
    }

    b_owners: tuple[int, ...]
    b_shares: tuple[bytes, ...]
    s_owners: tuple[int, ...]
    s_shares: tuple[bytes, ...]


REQUESTS: dict[Stage, type[Message]] = {
    Stage.SETUP: SetupRequest,
    Stage.SHARE_KEYS: ShareKeysRequest,
    Stage.MASKED_INPUT: MaskedInputRequest,
    Stage.UNMASK: UnmaskRequest,
}
REPLIES: dict[Stage, type[Message]] = {
    Stage.SETUP: AdvertiseKeys,
    Stage.SHARE_KEYS: ShareKeysReply,
    Stage.MASKED_INPUT: MaskedInputReply,
    Stage.UNMASK: UnmaskReply,
}
