"""Unbiased atomic sparsification over any atomic decomposition (dissertation §3.2, Eq. 3.2).

Given ``g = Σ λ_i a_i`` and keep probabilities ``p``, the estimator is::

    ĝ = Σ_i (λ_i t_i / p_i) a_i,     t_i ~ Bernoulli(p_i) independent,

so ``E[ĝ] = g`` (Lemma 3.1). Each atom has its own coin: this is not sampling a fixed number
of atoms without replacement (spec ``atomo.md`` §6.4), so the number sent ``K = Σ t_i`` is
random with ``E[K] = Σ p_i``. An empty draw decodes as zero; redrawing on ``K = 0`` would bias
the estimate (§6.3), so nothing here ever redraws.

Every draw comes from the caller's ``torch.Generator`` (CPU), one uniform per atom, so a seed
fixes the result and the entry-wise, QSGD and TernGrad samplers consume the stream alike.
"""

from __future__ import annotations

import torch

from flower_suite.compression.probabilities import atomo_probabilities

__all__ = [
    "check_generator",
    "keep_mask",
    "sparsified_weights",
    "sparsify_decomposition",
]


def check_generator(generator: torch.Generator) -> torch.Generator:
    """``generator`` itself; a ``ValueError`` unless it is a CPU ``torch.Generator``.

    Draws are made on the CPU so a seed gives the same message on every machine.
    """
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"expected a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != "cpu":
        raise ValueError(f"the generator must be a CPU generator, not {generator.device}")
    return generator


def keep_mask(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Independent ``t_i ~ Bernoulli(p_i)``: ``U_i < p_i`` for ``U_i ~ U[0, 1)`` (float64).

    ``p = 0`` is never kept and ``p = 1`` always is, since ``U < 1``.
    """
    uniforms = torch.rand(probs.shape, generator=check_generator(generator), dtype=torch.float64)
    return uniforms < probs.to(torch.float64)


def sparsified_weights(
    weights: torch.Tensor, probs: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """The estimator's coefficients ``λ_i t_i / p_i`` (float64; 0 for atoms not kept)."""
    lam = weights.detach().to(device="cpu", dtype=torch.float64)
    p = probs.detach().to(device="cpu", dtype=torch.float64)
    if lam.shape != p.shape:
        raise ValueError(f"{tuple(p.shape)} probabilities for {tuple(lam.shape)} weights")
    kept = keep_mask(p, generator)
    if bool((kept & (p <= 0)).any()):  # unreachable for p in [0, 1]; a guard against 1/0
        raise ValueError("an atom with probability 0 cannot be kept")
    coefficients = torch.zeros_like(lam)
    coefficients[kept] = lam[kept] / p[kept]
    return coefficients


def sparsify_decomposition(
    weights: torch.Tensor,
    atoms: torch.Tensor,
    budget: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """ĝ for ``g = Σ λ_i a_i`` with ATOMO's probabilities at budget ``s`` (Eq. 3.2, Alg. 1).

    ``atoms`` stacks the unit-norm atoms along dimension 0 (``(n, ...)``); any decomposition
    works (entry-wise, SVD, an orthonormal basis such as Fourier or wavelets, or a redundant
    dictionary: the cross term of Lemma 3.1 does not depend on ``p``, so the same ``p`` is
    optimal). Returns ``Σ (λ_i t_i / p_i) a_i`` in float64 with the shape of one atom.
    """
    if atoms.ndim < 1 or atoms.shape[0] != weights.numel():
        raise ValueError(f"{weights.numel()} weights for atoms of shape {tuple(atoms.shape)}")
    probs = atomo_probabilities(weights.reshape(-1), budget)
    coefficients = sparsified_weights(weights.reshape(-1), probs, generator)
    flat_atoms = atoms.detach().to(device="cpu", dtype=torch.float64).reshape(atoms.shape[0], -1)
    return (coefficients @ flat_atoms).reshape(atoms.shape[1:])
