"""Strict reading of ``.npy`` bytes received from an untrusted party.

Flower's ``Array`` carries its metadata (``dtype``, ``shape``, ``stype``) beside the ``.npy``
bytes, and the bytes carry their own header. Both are claims by the sender. ``np.load`` trusts
the header; a reader that checked only the metadata then parses whatever the header says (a
longer array, a truncated body, another dtype) and either crashes or fills a row partially.
:func:`read_npy` parses the header itself, checks it against what the *receiver* expects and
checks that the body holds exactly the declared number of bytes before it reads one value.

Format reference: NumPy Enhancement Proposal 1 (the ``.npy`` format, versions 1.0-3.0).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

import numpy as np

MAGIC = b"\x93NUMPY"
# numpy's own reader refuses headers above 10,000 bytes by default; a model array's header is
# under 200, so anything near the limit is hostile.
MAX_HEADER_BYTES = 10_000
_HEADER_KEYS = {"descr", "fortran_order", "shape"}


class NpyFormatError(ValueError):
    """The bytes are not a well-formed ``.npy`` array of the expected shape and dtype."""


def _header_bounds(data: memoryview) -> tuple[int, int, str]:
    """(header start, header length, text encoding) from the magic string and version."""
    if len(data) < 10 or bytes(data[:6]) != MAGIC:
        raise NpyFormatError("not .npy data (bad magic string)")
    major = data[6]
    if major == 1:
        return 10, int.from_bytes(data[8:10], "little"), "latin1"
    if major in (2, 3):
        if len(data) < 12:
            raise NpyFormatError("truncated .npy header")
        return 12, int.from_bytes(data[8:12], "little"), "latin1" if major == 2 else "utf8"
    raise NpyFormatError(f"unsupported .npy version {major}.{data[7]}")


def _parse_header(text: str) -> dict[str, Any]:
    try:
        header = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as err:
        raise NpyFormatError(f"unreadable .npy header: {err}") from None
    if not isinstance(header, dict) or set(header) != _HEADER_KEYS:
        raise NpyFormatError(f"the .npy header must be a dict with keys {sorted(_HEADER_KEYS)}")
    return header


def _header_dtype(descr: object) -> np.dtype:
    # A list descr is a structured dtype, which no model array has; refuse before np.dtype
    # builds something arbitrary from it.
    if not isinstance(descr, str):
        raise NpyFormatError(f"unsupported .npy dtype description {descr!r}")
    try:
        dtype = np.dtype(descr)
    except (TypeError, ValueError):
        raise NpyFormatError(f"unknown .npy dtype {descr!r}") from None
    if dtype.hasobject:
        raise NpyFormatError("object arrays are refused")
    return dtype


def _header_shape(shape: object) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise NpyFormatError(f"invalid .npy shape {shape!r}")
    return shape


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` header declares, and where the body starts."""

    dtype: np.dtype
    shape: tuple[int, ...]
    fortran_order: bool
    body_start: int


def read_npy_header(data: object) -> NpyHeader:
    """The validated header of ``.npy`` bytes. Raises :class:`NpyFormatError`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise NpyFormatError(f"array data must be bytes, not {type(data).__name__}")
    view = memoryview(data).cast("B")
    start, length, encoding = _header_bounds(view)
    if length > MAX_HEADER_BYTES:
        raise NpyFormatError(f".npy header of {length} bytes (limit {MAX_HEADER_BYTES})")
    body_start = start + length
    if len(view) < body_start:
        raise NpyFormatError("truncated .npy header")
    try:
        text = bytes(view[start:body_start]).decode(encoding)
    except UnicodeDecodeError:
        raise NpyFormatError("undecodable .npy header") from None
    header = _parse_header(text)
    fortran = header["fortran_order"]
    if not isinstance(fortran, bool):
        raise NpyFormatError(f"invalid .npy fortran_order {fortran!r}")
    return NpyHeader(
        _header_dtype(header["descr"]), _header_shape(header["shape"]), fortran, body_start
    )


def read_npy(data: object, *, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """The array in ``data``, which must be ``.npy`` bytes of exactly ``shape`` and ``dtype``.

    Returns a read-only view (no copy) for C-ordered data, a C-ordered copy for Fortran-ordered
    data. Raises :class:`NpyFormatError` naming the first mismatch; never returns a partially
    read array.
    """
    header = read_npy_header(data)
    view = memoryview(data).cast("B")  # type: ignore[arg-type]
    if header.dtype != np.dtype(dtype):
        raise NpyFormatError(f"bytes hold dtype {header.dtype}, expected {np.dtype(dtype)}")
    if header.shape != tuple(shape):
        raise NpyFormatError(f"bytes hold shape {header.shape}, expected {tuple(shape)}")
    count = int(np.prod(header.shape, dtype=np.int64))
    expected_bytes = count * header.dtype.itemsize
    body_bytes = len(view) - header.body_start
    if body_bytes != expected_bytes:
        raise NpyFormatError(f"body has {body_bytes} bytes, the header declares {expected_bytes}")
    values = np.frombuffer(view, dtype=header.dtype, count=count, offset=header.body_start)
    if header.fortran_order:
        return np.ascontiguousarray(values.reshape(header.shape, order="F")).reshape(header.shape)
    return values.reshape(header.shape)
