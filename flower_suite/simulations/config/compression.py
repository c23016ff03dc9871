"""The ``[compression]`` section: compressed client updates (ATOMO, QSGD, TernGrad, ...).

Dissertation chapter 3 (spec ``atomo.md``). ``name = "none"`` (the default) means plain
replies: the run is exactly the run without a ``[compression]`` table. Otherwise every client
sends its train update through :func:`~flower_suite.clients.compression_mod.
make_compression_mod` and the server decodes it in :class:`~flower_suite.strategies.
compressed.Compressed` before the configured strategy aggregates. Example::

    [compression]
    name = "atomo_spectral"   # a COMPRESSORS name: atomo_entrywise, atomo_spectral, qsgd,
                              # terngrad, lq (or "none")
    budget = 2                # s: expected atoms per layer (ATOMO); 0 = the compressor's default
    svd_float64 = false       # spectral ATOMO: SVD in float64 (default: the update's dtype)
    error_feedback = false    # keep what a message did not carry and add it to the next update
                              # (messages scaled to make the recursion contractive)

The parameter fields (``budget``, ``bits``, ``q``, ``svd_float64``) are the union of what the
registered compressors declare in their :class:`~flower_suite.compression.CompressorContract`;
``0`` (``false``) leaves a parameter at the compressor's default, and a non-zero value for a
compressor that does not take it is refused. The server cannot decode a masked sum of codes,
so ``[secagg]`` is refused with compression; so are the omniscient attacks (ALIE, IPM), which
the server-side injector writes into plain replies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from flower_suite.compression import COMPRESSORS, Compressor
from flower_suite.simulations.config.errors import ConfigError

__all__ = ["PARAMETER_FIELDS", "CompressionConfig", "validate_compression"]

# The compressors' constructor parameters a config can set (each contract declares its own).
PARAMETER_FIELDS = ("budget", "bits", "q", "svd_float64")


@dataclass(frozen=True)
class CompressionConfig:
    """``[compression]``: which compressor, its parameters (0 = its default), error feedback."""

    name: str = "none"
    budget: float = 0.0  # ATOMO's s (expected atoms per tensor/layer), > 0
    bits: int = 0  # QSGD's bits per level index, 1..16
    q: float = 0.0  # ℓ_q quantization's norm, >= 1 (inf allowed)
    svd_float64: bool = False  # spectral ATOMO's SVD in float64 (default: the update's dtype)
    error_feedback: bool = False

    @property
    def enabled(self) -> bool:
        return self.name != "none"

    def kwargs(self) -> dict[str, Any]:
        """The compressor's keyword arguments: the parameter fields that are set (non-zero)."""
        return {key: getattr(self, key) for key in PARAMETER_FIELDS if getattr(self, key) != 0}

    def build(self) -> Compressor:
        """The configured compressor (call :func:`validate_compression` first)."""
        return COMPRESSORS.create(self.name, **self.kwargs())


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _declared_parameters(name: str) -> set[str]:
    """The parameters the compressor's contract declares (else its factory's keywords)."""
    factory = COMPRESSORS.get(name)
    if isinstance(factory, type) and issubclass(factory, Compressor):
        return set(factory.contract.parameters)
    return set(COMPRESSORS.parameters(name)) - {"kwargs"}


def _check_parameters(compression: CompressionConfig) -> None:
    name = compression.name
    accepted = _declared_parameters(name)
    for key in PARAMETER_FIELDS:
        value = getattr(compression, key)
        if value == 0:
            continue
        _check(
            key in accepted,
            f"compression.{key}: compressor {name!r} takes no {key} "
            f"(it takes: {', '.join(sorted(accepted)) or 'no parameters'})",
        )
        _check(
            not (isinstance(value, float) and math.isnan(value)),
            f"compression.{key}: must be a number, not {value}",
        )
    try:
        compression.build()
    except (TypeError, ValueError) as err:
        # one parameter per compressor: the error is about the one that is set
        fields = [key for key in PARAMETER_FIELDS if getattr(compression, key) != 0]
        raise ConfigError(f"compression.{fields[0] if fields else 'name'}: {err}") from err


def validate_compression(
    compression: CompressionConfig,
    *,
    secagg_enabled: bool,
    omniscient_attack: str = "",
) -> None:
    """Refuse an unknown compressor, bad parameters and what cannot combine with compression
    (``[secagg]``; an omniscient attack, named by ``omniscient_attack``)."""
    name = compression.name
    if name not in COMPRESSORS:
        raise ConfigError(
            f"compression.name: unknown compressor {name!r} (known: {', '.join(COMPRESSORS)})"
        )
    for key in PARAMETER_FIELDS:  # 0 = default; a negative value is a mistake for every one
        value = getattr(compression, key)
        _check(
            not value < 0,
            f"compression.{key}: must be > 0 (0 = the compressor's default), not {value}",
        )
    _check_parameters(compression)
    if not compression.enabled:
        _check(
            not compression.error_feedback,
            "compression.error_feedback: needs a compressor (compression.name is 'none')",
        )
        return
    _check(
        not secagg_enabled,
        f"compression.name: {name!r} cannot run under [secagg]: the server cannot decode a "
        "masked sum of compressed codes (run without [secagg], or with compression.name = "
        "'none')",
    )
    _check(
        not omniscient_attack,
        f"compression.name: the omniscient attack {omniscient_attack!r} is injected on the "
        "server into plain replies; it cannot act on compressed ones (use a client-side "
        "attack, e.g. sign_flip, or run without [compression])",
    )
