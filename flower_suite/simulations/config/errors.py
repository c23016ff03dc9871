"""The one error of experiment configs (a leaf: imports nothing from the package)."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """An experiment config that cannot run; the message names the field."""
