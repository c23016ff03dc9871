"""The byte layout of one compressed tensor, its exact size formulas, and strict primitives.

The dissertation counts cost in reals (``s`` for entry-wise, ``s(n + m)`` for SVD, Table 3.1)
and defines no wire format; this one (spec ``atomo.md`` §2.6, beyond the text) spends 4 bytes
per real and adds a small header. All integers and floats are little-endian.

Header (``6 + 4·ndim`` bytes)::

    b"AT" | version u8 | kind u8 | dtype code u8 | ndim u8 | ndim × u32 dims

``dtype`` is the dtype of the tensor that was encoded (the receiver checks it and the shape
against what it expects). Bodies, by kind (``n`` = number of entries, ``ceil8(x) = ⌈x/8⌉``):

========== ==================================================================== ================
kind       body                                                                 bytes
========== ==================================================================== ================
DENSE      the raw tensor in its dtype                                          ``n·itemsize``
ENTRYWISE  u32 E, u32 S, f32 scale, support(E), E × f32 values,                  ``12 + sup(E) +
           support(S), S sign bits (1 = negative)                               4E + sup(S) +
                                                                                ceil8(S)``
QSGD       f32 norm, u32 levels L, n codes of w = bit_length(L) bits,           ``8 + ceil8(nw)
           one sign bit per nonzero code                                        + ceil8(nnz)``
SPECTRAL   u32 K, K × n f32 (σ_k/p_k) u_k, then K × m f32 v_k                    ``4 + 4K(n+m)``
========== ==================================================================== ================

A *support* of ``k`` indices out of ``n`` is sent as ``k`` strictly increasing u32 indices or
as an ``n``-bit bitmap, whichever is smaller (``sup(k) = min(4k, ceil8(n))``; the bitmap when
``ceil8(n) < 4k``), so each message has exactly one encoding. Bits are packed LSB first and
padding bits must be zero. The readers here refuse, with a :class:`CodecError`, anything that
is not exactly such a message: they never return partially read or out-of-range data.
"""

from __future__ import annotations

import enum
import math
import struct

import numpy as np
import torch

__all__ = [
    "MAGIC",
    "MAX_NDIM",
    "VERSION",
    "CodecError",
    "Header",
    "MessageKind",
    "Reader",
    "bits_bytes",
    "dense_message_bytes",
    "entrywise_message_bytes",
    "header_bytes",
    "pack_bits",
    "pack_codes",
    "pack_header",
    "pack_support",
    "qsgd_message_bytes",
    "spectral_message_bytes",
    "support_bytes",
    "uses_bitmap",
]

MAGIC = b"AT"
VERSION = 1
MAX_NDIM = 8
_U32 = struct.Struct("<I")
_F32 = struct.Struct("<f")


class CodecError(ValueError):
    """Bytes that are not a well-formed compressed message of the expected tensor."""


class MessageKind(enum.IntEnum):
    DENSE = 0
    ENTRYWISE = 1
    QSGD = 2
    SPECTRAL = 3


DTYPE_CODES: dict[torch.dtype, int] = {
    torch.float32: 1,
    torch.float64: 2,
    torch.float16: 3,
    torch.bfloat16: 4,
    torch.int64: 5,
    torch.int32: 6,
    torch.int16: 7,
    torch.int8: 8,
    torch.uint8: 9,
    torch.bool: 10,
}
CODE_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}


# ----------------------------------------------------------------------------- sizes
def bits_bytes(bits: int) -> int:
    """Bytes that hold ``bits`` packed bits: ``⌈bits/8⌉``."""
    return (bits + 7) // 8


def header_bytes(ndim: int) -> int:
    """``6 + 4·ndim``: magic, version, kind, dtype, ndim and one u32 per dimension."""
    return 6 + 4 * ndim


def uses_bitmap(count: int, numel: int) -> bool:
    """Whether a support of ``count`` indices out of ``numel`` travels as a bitmap."""
    return bits_bytes(numel) < 4 * count


def support_bytes(count: int, numel: int) -> int:
    """``min(4·count, ⌈numel/8⌉)``: the cheaper of u32 indices and a bitmap."""
    return min(4 * count, bits_bytes(numel))


def dense_message_bytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """Header plus the raw tensor: ``6 + 4·ndim + n·itemsize``."""
    return header_bytes(len(shape)) + math.prod(shape) * dtype.itemsize


def entrywise_message_bytes(shape: tuple[int, ...], num_exact: int, num_signed: int) -> int:
    """``header + 12 + sup(E) + 4E + sup(S) + ⌈S/8⌉`` for E exact and S signed entries."""
    n = math.prod(shape)
    exact = support_bytes(num_exact, n) + 4 * num_exact
    signed = support_bytes(num_signed, n) + bits_bytes(num_signed)
    return header_bytes(len(shape)) + 12 + exact + signed


def qsgd_message_bytes(shape: tuple[int, ...], levels: int, num_nonzero: int) -> int:
    """``header + 8 + ⌈n·w/8⌉ + ⌈nnz/8⌉`` with ``w = bit_length(levels)`` bits per code."""
    n = math.prod(shape)
    return (
        header_bytes(len(shape)) + 8 + bits_bytes(n * levels.bit_length()) + bits_bytes(num_nonzero)
    )


def spectral_message_bytes(shape: tuple[int, ...], matrix: tuple[int, int], rank: int) -> int:
    """``header + 4 + 4·K·(n + m)`` for ``K`` atoms of an ``n × m`` matrix (payload 4K(n+m))."""
    rows, cols = matrix
    return header_bytes(len(shape)) + 4 + 4 * rank * (rows + cols)


# ----------------------------------------------------------------------------- writing
def pack_header(kind: MessageKind, dtype: torch.dtype, shape: tuple[int, ...]) -> bytes:
    if dtype not in DTYPE_CODES:
        raise ValueError(f"dtype {dtype} has no wire code")
    if len(shape) > MAX_NDIM or any(not 0 <= d < 2**32 for d in shape):
        raise ValueError(f"shape {shape} does not fit the header (<= {MAX_NDIM} u32 dims)")
    fixed = MAGIC + bytes([VERSION, int(kind), DTYPE_CODES[dtype], len(shape)])
    return fixed + b"".join(_U32.pack(d) for d in shape)


def pack_bits(flags: torch.Tensor) -> bytes:
    """Bools packed LSB first into ``⌈len/8⌉`` bytes."""
    return np.packbits(flags.numpy().astype(np.uint8), bitorder="little").tobytes()


def pack_codes(codes: torch.Tensor, width: int) -> bytes:
    """Non-negative integers, ``width`` bits each, LSB first, into ``⌈len·width/8⌉`` bytes."""
    shifts = np.arange(width, dtype=np.int64)
    bits = (codes.numpy().astype(np.int64)[:, None] >> shifts) & 1
    return np.packbits(bits.reshape(-1).astype(np.uint8), bitorder="little").tobytes()


def pack_support(indices: torch.Tensor, numel: int) -> bytes:
    """Strictly increasing ``indices`` as u32 indices or as a bitmap (the cheaper, see above)."""
    if uses_bitmap(indices.numel(), numel):
        flags = torch.zeros(numel, dtype=torch.bool)
        flags[indices] = True
        return pack_bits(flags)
    return indices.numpy().astype("<u4").tobytes()


def pack_f32(values: torch.Tensor) -> bytes:
    """float32 little-endian; a ``ValueError`` if a value overflows float32."""
    with np.errstate(over="ignore"):  # reported below as a ValueError
        array = values.detach().to(torch.float64).numpy().astype("<f4")
    if not np.isfinite(array).all():
        raise ValueError("a compressed value overflows float32")
    return array.tobytes()


def pack_f32_scalar(value: float) -> bytes:
    return pack_f32(torch.tensor([value], dtype=torch.float64))


# ----------------------------------------------------------------------------- reading
class Header:
    """A parsed header: ``kind``, ``dtype``, ``shape`` and where the body starts."""

    def __init__(self, kind: MessageKind, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
        self.kind, self.dtype, self.shape = kind, dtype, shape
        self.size = header_bytes(len(shape))

    @classmethod
    def parse(cls, data: memoryview) -> Header:
        if len(data) < 6 or bytes(data[:2]) != MAGIC:
            raise CodecError("not a compressed tensor (bad magic bytes)")
        version, kind, dtype_code, ndim = data[2], data[3], data[4], data[5]
        if version != VERSION:
            raise CodecError(f"unsupported message version {version} (expected {VERSION})")
        if kind not in {k.value for k in MessageKind}:
            raise CodecError(f"unknown message kind {kind}")
        if dtype_code not in CODE_DTYPES:
            raise CodecError(f"unknown dtype code {dtype_code}")
        if ndim > MAX_NDIM:
            raise CodecError(f"header claims {ndim} dimensions (at most {MAX_NDIM})")
        if len(data) < header_bytes(ndim):
            raise CodecError("truncated header")
        shape = tuple(_U32.unpack_from(data, 6 + 4 * i)[0] for i in range(ndim))
        return cls(MessageKind(kind), CODE_DTYPES[dtype_code], shape)


class Reader:
    """Sequential reads from ``data`` starting at ``offset``; never past the end."""

    def __init__(self, data: memoryview, offset: int) -> None:
        self.data, self.offset = data, offset

    def take(self, count: int, what: str) -> memoryview:
        end = self.offset + count
        if end > len(self.data):
            raise CodecError(f"truncated message: {what} needs {count} bytes")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def u32(self, what: str) -> int:
        return int(_U32.unpack(self.take(4, what))[0])

    def f32_scalar(self, what: str, *, non_negative: bool = False) -> float:
        value = float(_F32.unpack(self.take(4, what))[0])
        if not math.isfinite(value) or (non_negative and value < 0):
            raise CodecError(f"{what} must be finite{' and >= 0' if non_negative else ''}")
        return value

    def f32_array(self, count: int, what: str) -> np.ndarray:
        values = np.frombuffer(self.take(4 * count, what), dtype="<f4").astype(np.float64)
        if not np.isfinite(values).all():
            raise CodecError(f"{what} hold NaN or Inf")
        return values

    def bits(self, count: int, what: str) -> np.ndarray:
        """``count`` bools; the padding bits of the last byte must be zero."""
        raw = np.frombuffer(self.take(bits_bytes(count), what), dtype=np.uint8)
        flags = np.unpackbits(raw, bitorder="little")
        if flags[count:].any():
            raise CodecError(f"{what}: nonzero padding bits")
        return flags[:count].astype(bool)

    def codes(self, count: int, width: int, what: str) -> np.ndarray:
        flags = self.bits(count * width, what).reshape(count, width).astype(np.int64)
        return flags @ (np.int64(1) << np.arange(width, dtype=np.int64))

    def support(self, count: int, numel: int, what: str) -> np.ndarray:
        """``count`` distinct indices in ``[0, numel)``, increasing (int64)."""
        if uses_bitmap(count, numel):
            flags = self.bits(numel, what)
            indices = np.flatnonzero(flags)
            if indices.size != count:
                raise CodecError(f"{what}: bitmap marks {indices.size} entries, not {count}")
            return indices.astype(np.int64)
        indices = np.frombuffer(self.take(4 * count, what), dtype="<u4").astype(np.int64)
        if indices.size and (indices[-1] >= numel or (np.diff(indices) <= 0).any()):
            raise CodecError(f"{what}: indices must be strictly increasing and below {numel}")
        return indices

    def finish(self) -> None:
        if self.offset != len(self.data):
            raise CodecError(f"{len(self.data) - self.offset} unexpected trailing bytes")
