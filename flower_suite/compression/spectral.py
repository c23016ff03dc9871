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

SVD precision: the SVD is taken in the update's own dtype (float32 for a float32 model; half
and bfloat16 in float32, which LAPACK needs), or in float64 on request (``svd_dtype``). The text
prescribes no precision (§3.4 only says "take the SVD"); a float32 thin SVD of LeNet's 500 x 800
FC update takes about half the time of a float64 one (110 vs 234 ms on one thread), and its
factors reconstruct the update to float32 precision (relative error 1.3e-6 measured), which is
the precision the factors travel in anyway (spec §2.6). The estimator is unbiased *given the
decomposition* ``U diag(σ) Vᵀ`` (Lemma 3.1), so a float32 SVD moves ``E[X̂]`` only by the SVD's
own round-off.

Singular values at or below ``max(eps_X · ‖X‖_F, sqrt(max(n, m)) · eps_svd · σ_max)`` are set to
zero before the probabilities are computed (``eps_X`` is the machine epsilon of the tensor's
dtype, ``eps_svd`` that of the SVD's). Rounding ``X`` to its dtype moves every singular value by
at most ``eps_X/2 · ‖X‖_F`` (Weyl), and the SVD's own round-off is below the second term (the
trailing singular values of float32 SVDs of low-rank float32 matrices up to 500 x 800 measured
at most 6.1 ``eps_32 ‖X‖_F``, under the term's 16; numpy's ``matrix_rank`` uses the more
conservative ``max(n, m)``, which would drop 1.3e-4 of a real LeNet update's norm in float32
against 5e-7 here), so these carry no information about ``X``. Left in, they would make a
low-rank float32 update look full rank: ``s ≥ rank`` would not reproduce it exactly (spec check
8), and a rounding-noise atom would now and then be sent with the weight ``σ/p`` of a real one.
Dropping them moves ``E[X̂]`` by at most ``sqrt(#dropped)`` times that tolerance in Frobenius
norm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from flower_suite.compression.probabilities import atomo_probabilities
from flower_suite.compression.sparsify import keep_mask

__all__ = [
    "SpectralSample",
    "sample_spectral",
    "spectral_decomposition",
    "spectral_matrix",
    "spectral_matrix_shape",
    "svd_precision",
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


def svd_precision(dtype: torch.dtype, svd_dtype: torch.dtype | None = None) -> torch.dtype:
    """The dtype the SVD of a ``dtype`` tensor is taken in: ``svd_dtype`` if given (float32 or
    float64), else ``dtype`` itself when LAPACK takes it (float32, float64), else float32."""
    if svd_dtype is not None:
        if svd_dtype not in (torch.float32, torch.float64):
            raise ValueError(f"the SVD runs in float32 or float64, not {svd_dtype}")
        return svd_dtype
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def spectral_decomposition(
    matrix: torch.Tensor,
    precision: torch.dtype | None = None,
    *,
    svd_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD ``(U, σ, Vᵀ)`` with the singular values that rounding ``matrix`` to
    ``precision`` (default: its own dtype) or the SVD itself could have produced set to 0
    (see the module doc). The SVD is taken in :func:`svd_precision` (default: the matrix's
    dtype); ``U`` and ``Vᵀ`` come in that dtype, ``σ`` in float64."""
    eps = torch.finfo(precision or matrix.dtype).eps
    matrix = matrix.to(svd_precision(matrix.dtype, svd_dtype))
    u, sigma, vh = torch.linalg.svd(matrix, full_matrices=False)
    sigma = sigma.to(torch.float64)
    if sigma.numel():
        svd_eps = torch.finfo(matrix.dtype).eps
        svd_roundoff = math.sqrt(max(matrix.shape)) * svd_eps * float(sigma[0])
        norm = float(torch.linalg.vector_norm(matrix, dtype=torch.float64))
        tolerance = max(eps * norm, svd_roundoff)
        sigma = torch.where(sigma > tolerance, sigma, torch.zeros_like(sigma))
    return u, sigma, vh


def spectral_matrix(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` reshaped to its spectral matrix on the CPU (its own dtype); a ``ValueError``
    if it is not floating point, holds NaN or Inf, or has no spectral form."""
    shape = tuple(tensor.shape)
    matrix_shape = spectral_matrix_shape(shape)
    if matrix_shape is None:
        raise ValueError(f"a tensor of shape {shape} has no spectral form (send it dense)")
    if not tensor.is_floating_point():
        raise ValueError(f"only floating-point tensors can be compressed, not {tensor.dtype}")
    matrix = tensor.detach().to("cpu").reshape(matrix_shape)
    if not bool(torch.isfinite(matrix).all()):
        raise ValueError("cannot compress a tensor that holds NaN or Inf")
    return matrix


def sample_spectral(
    tensor: torch.Tensor,
    budget: float,
    generator: torch.Generator,
    *,
    svd_dtype: torch.dtype | None = None,
) -> SpectralSample:
    """Spectral-ATOMO at budget ``s`` (expected atoms) for one layer (§3.4, Algorithm 1).

    Draws one uniform per singular value (``min(n, m)`` of them). The SVD is taken in the
    tensor's dtype unless ``svd_dtype`` says otherwise (see the module doc).
    """
    matrix = spectral_matrix(tensor)
    u, sigma, vh = spectral_decomposition(matrix, precision=tensor.dtype, svd_dtype=svd_dtype)
    probs = atomo_probabilities(sigma, budget)
    kept = torch.nonzero(keep_mask(probs, generator)).flatten()
    weights = sigma[kept] / probs[kept]
    left = (u[:, kept].to(torch.float64) * weights).T.contiguous()
    right = vh[kept].to(torch.float64)
    return SpectralSample(shape=tuple(tensor.shape), dtype=tensor.dtype, left=left, right=right)
