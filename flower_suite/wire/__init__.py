"""What travels between server and clients, read defensively (framework-free)."""

from __future__ import annotations

from flower_suite.wire.npy import (
    MAGIC,
    MAX_HEADER_BYTES,
    NpyFormatError,
    NpyHeader,
    read_npy,
    read_npy_header,
)

__all__ = [
    "MAGIC",
    "MAX_HEADER_BYTES",
    "NpyFormatError",
    "NpyHeader",
    "read_npy",
    "read_npy_header",
]
