"""Reading a number from a received ConfigRecord strictly (or any ``Mapping[str, object]``).

A ConfigRecord value may be any of Flower's config types (numbers, strings, bytes, lists);
``int(record[key])`` would accept ``"3"``, ``b"3"`` and ``True`` and truncate ``2.5``. These
accept exactly the numbers the key can mean and say which key was wrong otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["read_float", "read_int"]


def read_int(record: Mapping[str, object], key: str, default: int | None = None) -> int:
    """``record[key]`` as an int: an int, or an integral float (JSON-style configs send
    ``3.0``); ``default`` when the key is absent (``KeyError`` if there is no default).
    Raises ``TypeError`` for a non-number (bools included) and ``ValueError`` for a
    fractional float."""
    if key not in record:
        if default is None:
            raise KeyError(key)
        return default
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"config {key!r} must be an integer, got {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"config {key!r} must be an integer, got {value!r}")
    return int(value)


def read_float(record: Mapping[str, object], key: str, default: float | None = None) -> float:
    """``record[key]`` as a float (ints accepted); ``default`` when the key is absent
    (``KeyError`` if there is no default). Raises ``TypeError`` for a non-number (bools
    included)."""
    if key not in record:
        if default is None:
            raise KeyError(key)
        return default
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"config {key!r} must be a number, got {value!r}")
    return float(value)
