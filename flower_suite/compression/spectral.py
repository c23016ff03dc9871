"""Spectral-ATOMO: sparsify the SVD of each layer's update (dissertation §3.4).

A layer's update is reshaped to a matrix ``X = Σ_i σ_i u_i v_iᵀ`` (atoms ``u_i v_iᵀ`` have unit
Frobenius norm and are orthonormal), ATOMO's probabilities are computed from ``σ`` with the
layer's budget ``s``, and the kept atoms travel as ``(σ_i/p_i) u_i`` and ``v_i``::

    X̂ = Σ_{kept} (σ_i / p_i) u_i v_iᵀ,    E[X̂] = X,    E‖X̂‖_F² = Σ σ_i²/p_i  (= ‖X‖_*²/s balanced)

Cost: ``K (n + m)`` reals for ``K`` kept atoms, ``E[K] = min(s, rank)`` (Table 3.1).

Reshape (spec ``atomo.md`` §2.5, setup at ``004:764``): a 2-D weight is used as is; a conv
weight ``[x, y, k, k]`` becomes ``(x·y, k²)`` in C order and then, when ``x·y`` is even,
``(x·y/2, 2k²)``, so two consecutive filters' kernels share a row. Beyond the text, the same
rule is applied to any tensor of 3 or more dimensions (``(d0·d1, rest)``, then paired rows).
Tensors of fewer than 2 dimensions (biases, norms) have no spectral form and are sent dense.

Singular values at or below ``max(eps_X · ‖X‖_F, max(n, m) · eps_64 · σ_max)`` are set to zero
before the probabilities are computed (``eps_X`` is the machine epsilon of the tensor's dtype).
Rounding ``X`` to its dtype moves every singular value by at most ``eps_X/2 · ‖X‖_F`` (Weyl), and
the float64 SVD's own round-off is below the second term (numpy's ``matrix_rank`` tolerance), so
these carry no information about ``X``. Left in, they would make a low-rank float32 update look
full rank: ``s ≥ rank`` would not reproduce it exactly (spec check 8), and a rounding-noise atom
would now and then be sent with the weight ``σ/p`` of a real one. Dropping them moves ``E[X̂]``
by at most ``sqrt(#dropped)`` times that tolerance in Frobenius norm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from flower_suite.compression.entrywise import flat_float64
from flower_suite.compression.probabilities import atomo_probabilities
from flower_suite.compression.sparsify import keep_mask

__all__ = [
    "SpectralSample",
    "sample_spectral",
    "spectral_decomposition",
    "spectral_matrix_shape",
]


def spectral_matrix_shape(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """The ``(n, m)`` matrix a tensor of ``shape`` is sparsified as; None when it has none.

    >>> spectral_matrix_shape((64, 64, 3, 3)), spectral_matrix_shape((512, 10))
    ((2048, 18), (512, 10))
    >>> spectral_matrix_shape((3, 5, 3, 3)), spectral_matrix_shape((10,))
    ((15, 9), None)
    """
    if len(shape) < 2:
        return None
    if len(shape) == 2:
        return shape[0], shape[1]
    rows, cols = shape[0] * shape[1], math.prod(shape[2:])
    return (rows // 2, 2 * cols) if rows % 2 == 0 else (rows, cols)


@dataclass(frozen=True)
class SpectralSample:
    """The kept atoms: ``left[k] = (σ_k/p_k) u_k`` and ``right[k] = v_k`` (``K x n``, ``K x m``)."""

    shape: tuple[int, ...]
    dtype: torch.dtype  # of the tensor this estimates
    left: torch.Tensor
    right: torch.Tensor

    @property
    def rank(self) -> int:
        """``K``, the number of atoms sent."""
        return int(self.left.shape[0])

    def to_dense(self) -> torch.Tensor:
        """``X̂ = leftᵀ right`` in float64, reshaped back to ``shape``."""
        matrix = self.left.to(torch.float64).T @ self.right.to(torch.float64)
        return matrix.reshape(self.shape)


def spectral_decomposition(
    matrix: torch.Tensor, precision: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD ``(U, σ, Vᵀ)`` in float64, with the singular values that rounding ``matrix`` to
    ``precision`` (default: its own dtype) could have produced set to 0 (see the module doc)."""
    eps = torch.finfo(precision or matrix.dtype).eps
    matrix = matrix.to(torch.float64)
    u, sigma, vh = torch.linalg.svd(matrix, full_matrices=False)
    if sigma.numel():
        svd_roundoff = max(matrix.shape) * torch.finfo(torch.float64).eps * float(sigma[0])
        tolerance = max(eps * float(torch.linalg.matrix_norm(matrix)), svd_roundoff)
        sigma = torch.where(sigma > tolerance, sigma, torch.zeros_like(sigma))
    return u, sigma, vh


def sample_spectral(
    tensor: torch.Tensor, budget: float, generator: torch.Generator
) -> SpectralSample:
    """Spectral-ATOMO at budget ``s`` (expected atoms) for one layer (§3.4, Algorithm 1).

    Draws one uniform per singular value (``min(n, m)`` of them).
    """
    shape = tuple(tensor.shape)
    matrix_shape = spectral_matrix_shape(shape)
    if matrix_shape is None:
        raise ValueError(f"a tensor of shape {shape} has no spectral form (send it dense)")
    matrix = flat_float64(tensor).reshape(matrix_shape)
    u, sigma, vh = spectral_decomposition(matrix, precision=tensor.dtype)
    probs = atomo_probabilities(sigma, budget)
    kept = torch.nonzero(keep_mask(probs, generator)).flatten()
    weights = sigma[kept] / probs[kept]
    left = (u[:, kept] * weights).T.contiguous()
    return SpectralSample(shape=shape, dtype=tensor.dtype, left=left, right=vh[kept])
