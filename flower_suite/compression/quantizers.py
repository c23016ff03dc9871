"""QSGD, TernGrad and ℓ_q quantization: the quantizers ATOMO contains (dissertation §3.3).

Each is written as in its own paper; the tests check the equivalences §3.3 derives.

- **QSGD** (Alistarh et al., 2017), one bucket per tensor, ``L`` levels::

      Q(v)_i = ‖v‖₂ · sign(v_i) · ξ_i / L,   ξ_i = ⌊L|v_i|/‖v‖₂⌋ + Bernoulli(frac(L|v_i|/‖v‖₂))

  With ``L = 1`` (1-bit QSGD), ``ξ_i ~ Bernoulli(|v_i|/‖v‖₂)``: entry-wise ATOMO with
  ``p_i = |v_i|/‖v‖₂``, the optimal ``p`` for ``s = ‖v‖₁/‖v‖₂`` (§3.3.1). The spec's b-bit
  variant uses ``L = 2^b - 1`` levels (spec ``atomo.md`` §6.7).
- **TernGrad** (Wen et al., 2017), plain (no clipping, one scaler per tensor)::

      T(g)_i = ‖g‖_∞ · sign(g_i) · b_i,   b_i ~ Bernoulli(|g_i|/‖g‖_∞)

  entry-wise ATOMO for ``s = ‖g‖₁/‖g‖_∞`` (§3.3.2).
- **ℓ_q quantization** (§3.3.3): ``L_q(g)_i = ‖g‖_q · sign(g_i) · ζ_i`` with
  ``ζ_i ~ Bernoulli(|g_i|/‖g‖_q)``; ``E‖L_q(g)‖² = ‖g‖₁‖g‖_q`` (Theorem 3.7).

All draw one float64 uniform per entry from the caller's generator, in the same order as
:func:`~flower_suite.compression.sparsify.keep_mask`, so equal seeds give equal supports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from flower_suite.compression.entrywise import EntrywiseSample, flat_float64
from flower_suite.compression.sparsify import check_generator, keep_mask

__all__ = [
    "MAX_QSGD_BITS",
    "QsgdSample",
    "lq_quantize",
    "qsgd_levels",
    "qsgd_quantize",
    "qsgd_variance",
    "terngrad_quantize",
]

# Level codes travel in `bits` bits each (wire format); 16 bits is far past any useful QSGD.
MAX_QSGD_BITS = 16


def qsgd_levels(bits: int) -> int:
    """``L = 2^b - 1`` quantization levels for b-bit QSGD (spec §6.7); ``b`` in 1..16."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_QSGD_BITS:
        raise ValueError(f"QSGD bits must be an integer in [1, {MAX_QSGD_BITS}], got {bits!r}")
    return 2**bits - 1


@dataclass(frozen=True)
class QsgdSample:
    """QSGD's output: ``‖v‖₂ · sign · code / levels`` per entry (codes in ``0..levels``)."""

    shape: tuple[int, ...]
    dtype: torch.dtype  # of the tensor this estimates
    norm: float
    levels: int
    codes: torch.Tensor  # int64, one per entry
    negative: torch.Tensor  # bool, one per entry (meaningful where code > 0)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def num_nonzero(self) -> int:
        return int((self.codes > 0).sum())

    def to_dense(self) -> torch.Tensor:
        """The estimate as a float64 tensor of ``shape``."""
        signs = 1.0 - 2.0 * self.negative.to(torch.float64)
        values = self.norm * signs * self.codes.to(torch.float64) / self.levels
        return values.reshape(self.shape)

    def as_entrywise(self) -> EntrywiseSample:
        """A 1-level sample as entry-wise ATOMO's ``±scale`` form (§3.3.1), for the wire."""
        if self.levels != 1:
            raise ValueError(f"only 1-level QSGD is a scaled sign, this has {self.levels} levels")
        indices = torch.nonzero(self.codes).flatten()
        return EntrywiseSample(
            shape=self.shape,
            dtype=self.dtype,
            exact_indices=torch.zeros(0, dtype=torch.int64),
            exact_values=torch.zeros(0, dtype=torch.float64),
            signed_indices=indices,
            negative=self.negative[indices],
            scale=self.norm,
        )


def qsgd_quantize(tensor: torch.Tensor, levels: int, generator: torch.Generator) -> QsgdSample:
    """QSGD's stochastic quantization ``Q_L`` with one bucket (the whole tensor)."""
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"QSGD needs a positive integer number of levels, got {levels!r}")
    flat = flat_float64(tensor)
    norm = float(torch.linalg.vector_norm(flat))
    uniforms = torch.rand(flat.shape, generator=check_generator(generator), dtype=torch.float64)
    if norm == 0.0:
        codes = torch.zeros(flat.shape, dtype=torch.int64)
    else:
        # `|v| * L / ‖v‖` (not `|v| / ‖v‖ * L`) so that L = 1 gives bit-for-bit |v| / ‖v‖.
        scaled = (flat.abs() * levels / norm).clamp_(max=float(levels))
        lower = scaled.floor()
        codes = (lower + (uniforms < scaled - lower).to(torch.float64)).to(torch.int64)
    return QsgdSample(tuple(tensor.shape), tensor.dtype, norm, levels, codes, flat < 0)


def qsgd_variance(tensor: torch.Tensor, levels: int) -> float:
    """Exact ``E‖Q(v) - v‖² = (‖v‖₂/L)² Σ f_i (1 - f_i)``, ``f_i = frac(L|v_i|/‖v‖₂)``."""
    flat = flat_float64(tensor)
    norm = float(torch.linalg.vector_norm(flat))
    if norm == 0.0:
        return 0.0
    scaled = flat.abs() * levels / norm
    frac = scaled - scaled.floor()
    return float((norm / levels) ** 2 * (frac * (1 - frac)).sum())


def _scaled_sign(
    tensor: torch.Tensor, scale: float, flat: torch.Tensor, kept: torch.Tensor
) -> EntrywiseSample:
    """The kept entries of ``flat`` (``tensor`` flattened) as ``±scale`` (no exact part)."""
    indices = torch.nonzero(kept).flatten()
    return EntrywiseSample(
        shape=tuple(tensor.shape),
        dtype=tensor.dtype,
        exact_indices=torch.zeros(0, dtype=torch.int64),
        exact_values=torch.zeros(0, dtype=torch.float64),
        signed_indices=indices,
        negative=flat[indices] < 0,
        scale=scale,
    )


def lq_quantize(tensor: torch.Tensor, q: float, generator: torch.Generator) -> EntrywiseSample:
    """ℓ_q quantization (§3.3.3): keep entry i w.p. ``|g_i|/‖g‖_q``, send ``±‖g‖_q``.

    ``q = 2`` is 1-bit QSGD and ``q = inf`` is TernGrad. Needs ``q ≥ 1`` (a norm, so that
    ``|g_i| ≤ ‖g‖_q`` and the probabilities are valid).
    """
    if not (isinstance(q, int | float) and not isinstance(q, bool) and q >= 1):
        raise ValueError(f"ℓ_q quantization needs q >= 1 (or inf), got {q!r}")
    flat = flat_float64(tensor)
    norm = float(torch.linalg.vector_norm(flat, ord=q))
    probs = flat.abs() / norm if norm > 0 else torch.zeros_like(flat)
    kept = keep_mask(probs.clamp_(max=1.0), generator)
    return _scaled_sign(tensor, norm, flat, kept)


def terngrad_quantize(tensor: torch.Tensor, generator: torch.Generator) -> EntrywiseSample:
    """TernGrad (plain): scaler ``s_t = max|g|``, ``b_i ~ Bernoulli(|g_i|/s_t)``, send ``±s_t``."""
    flat = flat_float64(tensor)
    scaler = float(flat.abs().max()) if flat.numel() else 0.0
    probs = flat.abs() / scaler if scaler > 0 else torch.zeros_like(flat)
    kept = keep_mask(probs, generator)
    return _scaled_sign(tensor, scaler, flat, kept)
