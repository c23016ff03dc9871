"""Reading a received Flower ``Array`` strictly (the Flower-facing half of ``wire``).

An ``Array``'s metadata and its ``.npy`` header are both claims by the sender; both are checked
against what the receiver expects before a value is read (:func:`flower_suite.wire.read_npy`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Array

from flower_suite.wire.npy import NpyFormatError, read_npy

NPY_STYPE = "numpy.ndarray"


class ReplyError(ValueError):
    """Why one reply cannot be used (the reply is excluded, the round goes on)."""


def read_array(array: Any, *, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """The values of a received ``Array`` that must have ``shape`` and ``dtype``.

    Metadata and ``.npy`` header are both checked against the expectation; a read-only view
    of the bytes is returned. Raises :class:`ReplyError`.
    """
    if not isinstance(array, Array):
        raise ReplyError(f"expected an Array, got {type(array).__name__}")
    if array.stype != NPY_STYPE:
        raise ReplyError(f"stype {array.stype!r}, expected {NPY_STYPE!r}")
    if tuple(array.shape) != shape:
        raise ReplyError(f"shape {tuple(array.shape)}, expected {shape}")
    try:
        declared = np.dtype(array.dtype)
    except (TypeError, ValueError):
        raise ReplyError(f"unknown dtype {array.dtype!r}") from None
    if declared != dtype:
        raise ReplyError(f"dtype {array.dtype}, expected {dtype}")
    try:
        return read_npy(array.data, shape=shape, dtype=dtype)
    except NpyFormatError as err:
        raise ReplyError(str(err)) from None
