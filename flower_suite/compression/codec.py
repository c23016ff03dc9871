"""Encode a sample (or a dense tensor) to bytes, and decode bytes back, strictly.

:func:`encode` writes the layout of :mod:`~flower_suite.compression.wire_format`;
:func:`message_bytes` gives the same length from the size formulas without encoding; and
:func:`decode` checks the bytes against the tensor the *receiver* expects (shape, dtype, and
optionally which kinds it accepts) and against the exact length the header implies before it
reads one value. Anything else is a :class:`~flower_suite.compression.wire_format.CodecError`
(a ``ValueError``): a truncated or padded message, a bad header, counts larger than the
tensor, out-of-range or repeated indices, nonzero padding bits, NaN or Inf values.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Collection

import numpy as np
import torch

from flower_suite.compression.entrywise import EntrywiseSample
from flower_suite.compression.quantizers import MAX_QSGD_BITS, QsgdSample
from flower_suite.compression.spectral import SpectralSample, spectral_matrix_shape
from flower_suite.compression.wire_format import (
    CodecError,
    Header,
    MessageKind,
    Reader,
    dense_message_bytes,
    entrywise_message_bytes,
    pack_bits,
    pack_codes,
    pack_f32,
    pack_f32_scalar,
    pack_header,
    pack_support,
    qsgd_message_bytes,
    spectral_message_bytes,
)

__all__ = ["Message", "decode", "encode", "message_bytes"]

Message = torch.Tensor | EntrywiseSample | QsgdSample | SpectralSample

# Dense bodies are the tensor's own bytes; the formats are little-endian.
if sys.byteorder != "little":  # pragma: no cover - no big-endian CPU runs torch wheels today
    raise ImportError("flower_suite.compression's dense messages assume a little-endian host")


def _matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    matrix = spectral_matrix_shape(shape)
    if matrix is None:
        raise ValueError(f"a tensor of shape {shape} has no spectral form")
    return matrix


def message_bytes(message: Message) -> int:
    """The exact length of ``encode(message)``, from the size formulas (nothing is encoded)."""
    if isinstance(message, torch.Tensor):
        return dense_message_bytes(tuple(message.shape), message.dtype)
    if isinstance(message, QsgdSample) and message.levels == 1:
        message = message.as_entrywise()
    if isinstance(message, EntrywiseSample):
        return entrywise_message_bytes(message.shape, message.num_exact, message.num_signed)
    if isinstance(message, QsgdSample):
        return qsgd_message_bytes(message.shape, message.levels, message.num_nonzero)
    if isinstance(message, SpectralSample):
        return spectral_message_bytes(message.shape, _matrix_shape(message.shape), message.rank)
    raise TypeError(f"cannot size a {type(message).__name__}")


# ----------------------------------------------------------------------------- encoding
def _encode_dense(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    if flat.is_floating_point() and not bool(torch.isfinite(flat).all()):
        raise ValueError("cannot encode a tensor that holds NaN or Inf")
    header = pack_header(MessageKind.DENSE, tensor.dtype, tuple(tensor.shape))
    return header + flat.view(torch.uint8).numpy().tobytes()


def _encode_entrywise(sample: EntrywiseSample) -> bytes:
    n = sample.numel
    return b"".join(
        [
            pack_header(MessageKind.ENTRYWISE, sample.dtype, sample.shape),
            np.array([sample.num_exact, sample.num_signed], dtype="<u4").tobytes(),
            pack_f32_scalar(sample.scale),
            pack_support(sample.exact_indices, n),
            pack_f32(sample.exact_values),
            pack_support(sample.signed_indices, n),
            pack_bits(sample.negative),
        ]
    )


def _encode_qsgd(sample: QsgdSample) -> bytes:
    nonzero = sample.codes > 0
    return b"".join(
        [
            pack_header(MessageKind.QSGD, sample.dtype, sample.shape),
            pack_f32_scalar(sample.norm),
            np.array([sample.levels], dtype="<u4").tobytes(),
            pack_codes(sample.codes.reshape(-1), sample.levels.bit_length()),
            pack_bits(sample.negative.reshape(-1)[nonzero.reshape(-1)]),
        ]
    )


def _encode_spectral(sample: SpectralSample) -> bytes:
    rows, cols = _matrix_shape(sample.shape)
    if sample.left.shape != (sample.rank, rows) or sample.right.shape != (sample.rank, cols):
        raise ValueError(
            f"factors {tuple(sample.left.shape)}, {tuple(sample.right.shape)} "
            f"do not fit a {rows} x {cols} matrix"
        )
    return b"".join(
        [
            pack_header(MessageKind.SPECTRAL, sample.dtype, sample.shape),
            np.array([sample.rank], dtype="<u4").tobytes(),
            pack_f32(sample.left.reshape(-1)),
            pack_f32(sample.right.reshape(-1)),
        ]
    )


def encode(message: Message) -> bytes:
    """The bytes of ``message``: a dense tensor as is (in its own dtype), or a sample.

    A sample's header carries the dtype of the tensor it estimates; its values travel as
    float32 (a ``ValueError`` if one overflows it).
    """
    if isinstance(message, torch.Tensor):
        return _encode_dense(message)
    if not message.dtype.is_floating_point:
        raise ValueError(f"a sample estimates a floating-point tensor, not {message.dtype}")
    if isinstance(message, QsgdSample) and message.levels == 1:
        return _encode_entrywise(message.as_entrywise())
    if isinstance(message, EntrywiseSample):
        return _encode_entrywise(message)
    if isinstance(message, QsgdSample):
        return _encode_qsgd(message)
    if isinstance(message, SpectralSample):
        return _encode_spectral(message)
    raise TypeError(f"cannot encode a {type(message).__name__}")


# ----------------------------------------------------------------------------- decoding
def _expect_length(data: memoryview, expected: int) -> None:
    if len(data) != expected:
        raise CodecError(f"message is {len(data)} bytes, its header declares {expected}")


def _decode_dense(reader: Reader, header: Header) -> torch.Tensor:
    _expect_length(reader.data, dense_message_bytes(header.shape, header.dtype))
    count = math.prod(header.shape)
    body = reader.take(count * header.dtype.itemsize, "values")
    if count == 0:
        return torch.empty(header.shape, dtype=header.dtype)
    values = torch.frombuffer(bytearray(body), dtype=header.dtype).reshape(header.shape)
    if header.dtype == torch.bool and bool((values.view(torch.uint8) > 1).any()):
        raise CodecError("bool values must be bytes 0 or 1")
    return values


def _decode_entrywise(reader: Reader, header: Header) -> torch.Tensor:
    n = math.prod(header.shape)
    num_exact, num_signed = reader.u32("entry counts"), reader.u32("entry counts")
    if num_exact + num_signed > n:
        raise CodecError(f"header claims {num_exact} + {num_signed} entries of a {n}-entry tensor")
    _expect_length(reader.data, entrywise_message_bytes(header.shape, num_exact, num_signed))
    scale = reader.f32_scalar("scale", non_negative=True)
    exact_indices = reader.support(num_exact, n, "exact indices")
    exact_values = reader.f32_array(num_exact, "exact values")
    signed_indices = reader.support(num_signed, n, "signed indices")
    negative = reader.bits(num_signed, "sign bits")
    if np.intersect1d(exact_indices, signed_indices).size:
        raise CodecError("an entry is listed both as exact and as signed")
    flat = np.zeros(n, dtype=np.float64)
    flat[exact_indices] = exact_values
    flat[signed_indices] = np.where(negative, -scale, scale)
    return torch.from_numpy(flat)


def _decode_qsgd(reader: Reader, header: Header) -> torch.Tensor:
    n = math.prod(header.shape)
    norm = reader.f32_scalar("norm", non_negative=True)
    levels = reader.u32("levels")
    if not 1 <= levels.bit_length() <= MAX_QSGD_BITS:
        raise CodecError(f"QSGD levels must lie in [1, {2**MAX_QSGD_BITS - 1}], got {levels}")
    if len(reader.data) < qsgd_message_bytes(header.shape, levels, 0):
        raise CodecError("truncated message: fewer bytes than the level codes need")
    codes = reader.codes(n, levels.bit_length(), "level codes")
    if codes.size and codes.max() > levels:
        raise CodecError(f"a level code exceeds the {levels} levels")
    nonzero = codes > 0
    _expect_length(reader.data, qsgd_message_bytes(header.shape, levels, int(nonzero.sum())))
    negative = reader.bits(int(nonzero.sum()), "sign bits")
    signs = np.ones(n, dtype=np.float64)
    signs[np.flatnonzero(nonzero)[negative]] = -1.0
    return torch.from_numpy(norm * signs * codes / levels)


def _decode_spectral(reader: Reader, header: Header) -> torch.Tensor:
    matrix = spectral_matrix_shape(header.shape)
    if matrix is None:
        raise CodecError(f"a tensor of shape {header.shape} has no spectral form")
    rows, cols = matrix
    rank = reader.u32("rank")
    if rank > min(rows, cols):
        raise CodecError(
            f"header claims {rank} atoms; a {rows} x {cols} matrix has at most {min(rows, cols)}"
        )
    _expect_length(reader.data, spectral_message_bytes(header.shape, matrix, rank))
    left = reader.f32_array(rank * rows, "left factors").reshape(rank, rows)
    right = reader.f32_array(rank * cols, "right factors").reshape(rank, cols)
    return torch.from_numpy(left.T @ right)


_DECODERS = {
    MessageKind.ENTRYWISE: _decode_entrywise,
    MessageKind.QSGD: _decode_qsgd,
    MessageKind.SPECTRAL: _decode_spectral,
}


def _check_header(
    header: Header, shape: tuple[int, ...], dtype: torch.dtype, kinds: Collection[MessageKind]
) -> None:
    if header.kind not in kinds:
        raise CodecError(f"a {header.kind.name} message is not accepted here")
    if header.shape != shape:
        raise CodecError(f"message is for shape {header.shape}, expected {shape}")
    if header.dtype != dtype:
        raise CodecError(f"message is for dtype {header.dtype}, expected {dtype}")
    if header.kind is not MessageKind.DENSE and not dtype.is_floating_point:
        raise CodecError(f"a {header.kind.name} message cannot hold a {dtype} tensor")


def decode(
    data: bytes | bytearray | memoryview,
    shape: tuple[int, ...] | torch.Size,
    dtype: torch.dtype,
    *,
    kinds: Collection[MessageKind] = tuple(MessageKind),
) -> torch.Tensor:
    """The tensor in ``data``, which must be one message for a ``shape``/``dtype`` tensor.

    ``kinds`` restricts the message kinds accepted (a compressor accepts only what it sends).
    Raises :class:`CodecError` (a ``ValueError``) naming the first problem; the result is a
    new tensor of exactly ``shape`` and ``dtype`` with finite values.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"a message must be bytes, not {type(data).__name__}")
    view = memoryview(data).cast("B")
    header = Header.parse(view)
    _check_header(header, tuple(shape), dtype, kinds)
    reader = Reader(view, header.size)
    if header.kind is MessageKind.DENSE:
        values = _decode_dense(reader, header)
    else:
        values = _DECODERS[header.kind](reader, header).reshape(header.shape).to(dtype)
    reader.finish()
    if values.is_floating_point() and not bool(torch.isfinite(values).all()):
        raise CodecError(f"decoded values are not finite in {dtype}")
    return values
