"""Entry-wise ATOMO: the atoms are the coordinates, ``a_i = e_i`` and ``λ_i = g_i`` (§3.2).

With the variance-optimal probabilities (Algorithm 1) every kept entry is one of two kinds:

- a *capped* entry (``p_i = 1``) is sent exactly, ``ĝ_i = g_i``;
- every other kept entry has ``p_i = |g_i| (s - n_s) / T`` with ``T`` the sum of the uncapped
  ``|g_j|``, so ``ĝ_i = g_i / p_i = sign(g_i) · T / (s - n_s)``: one shared magnitude.

So a sample is "exact values at a few indices, ``±scale`` at the others" (:class:`EntrywiseSample`),
which the wire format sends as indices, one float per exact entry, one scale and one sign bit
per signed entry, about 4.1 bytes per kept entry instead of 8 for (index, value) pairs.
1-bit QSGD and TernGrad (§3.3) produce the same structure with no exact part and the scale
``‖g‖₂`` or ``‖g‖_∞`` (:mod:`~flower_suite.compression.quantizers`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from flower_suite.compression.probabilities import atomo_solution
from flower_suite.compression.sparsify import keep_mask

__all__ = ["EntrywiseSample", "sample_entrywise"]


@dataclass(frozen=True)
class EntrywiseSample:
    """A sparse estimate: ``exact_values`` at ``exact_indices``, ``±scale`` at ``signed_indices``.

    Indices are int64, strictly increasing, into the flattened tensor of ``shape``, and the two
    index sets are disjoint; ``negative[k]`` is the sign of the entry at ``signed_indices[k]``.
    """

    shape: tuple[int, ...]
    dtype: torch.dtype  # of the tensor this estimates (the receiver checks it)
    exact_indices: torch.Tensor
    exact_values: torch.Tensor
    signed_indices: torch.Tensor
    negative: torch.Tensor
    scale: float

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def num_exact(self) -> int:
        return int(self.exact_indices.numel())

    @property
    def num_signed(self) -> int:
        return int(self.signed_indices.numel())

    def to_dense(self) -> torch.Tensor:
        """The estimate ĝ as a float64 tensor of ``shape``."""
        flat = torch.zeros(self.numel, dtype=torch.float64)
        flat[self.exact_indices] = self.exact_values.to(torch.float64)
        signs = 1.0 - 2.0 * self.negative.to(torch.float64)
        flat[self.signed_indices] = signs * self.scale
        return flat.reshape(self.shape)


def flat_float64(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` flattened to float64 on the CPU; a ``ValueError`` if it holds NaN or Inf."""
    if not (tensor.is_floating_point()):
        raise ValueError(f"only floating-point tensors can be compressed, not {tensor.dtype}")
    flat = tensor.detach().to(device="cpu", dtype=torch.float64).reshape(-1)
    if not torch.isfinite(flat).all():
        raise ValueError("cannot compress a tensor that holds NaN or Inf")
    return flat


def sample_entrywise(
    tensor: torch.Tensor, budget: float, generator: torch.Generator
) -> EntrywiseSample:
    """Entry-wise ATOMO at sparsity budget ``s`` (expected kept entries, Algorithm 1, Eq. 3.2).

    ``E[ĝ] = g`` and ``E‖ĝ - g‖² = Σ g_i² (1/p_i - 1)``; in the balanced case
    (``s ≤ ‖g‖₁/‖g‖_∞``) ``E‖ĝ‖² = ‖g‖₁²/s``. One uniform is drawn per entry.
    """
    flat = flat_float64(tensor)
    solution = atomo_solution(flat, budget)
    probs = solution.probs
    kept = keep_mask(probs, generator)
    exact = kept & (probs >= 1)
    signed = kept & (probs < 1)
    exact_indices = torch.nonzero(exact).flatten()
    signed_indices = torch.nonzero(signed).flatten()
    return EntrywiseSample(
        shape=tuple(tensor.shape),
        dtype=tensor.dtype,
        exact_indices=exact_indices,
        exact_values=flat[exact_indices],
        signed_indices=signed_indices,
        negative=flat[signed_indices] < 0,
        scale=solution.shared_ratio,
    )
