"""Variance-minimizing keep probabilities for a sparsity budget (ATOMO, dissertation §3.2).

For an atomic decomposition ``g = Σ λ_i a_i`` with unit-norm atoms, the estimator of Eq. 3.2
keeps atom ``i`` with probability ``p_i``. Its second moment (Lemma 3.1) is
``E‖ĝ‖² = Σ λ_i²/p_i + Σ_{i≠j} λ_i λ_j ⟨a_i, a_j⟩``, and only the first sum depends on ``p``, so
the probabilities solve Eq. 3.3::

    minimize  Σ λ_i² / p_i    subject to  0 < p_i ≤ 1,   Σ p_i = s.

The closed form (Algorithm 1, Theorem 3.6, KKT form Eq. 3.21): the ``n_s`` atoms of largest
``|λ|`` get ``p = 1`` and the others ``p_i = |λ_i| (s - n_s) / Σ_{j>n_s} |λ_j|``, for the
smallest ``n_s`` that keeps every value at most 1. When nothing caps (``s ≤ ‖λ‖₁/‖λ‖_∞``,
Lemma 3.4) this is ``p_i = |λ_i| s / ‖λ‖₁`` with ``Σ λ²/p = ‖λ‖₁²/s`` (Lemma 3.2).

Atoms with ``λ_i = 0`` get ``p_i = 0`` (never sent: they contribute nothing), and a budget at
least the number of nonzero atoms keeps every nonzero atom (spec ``atomo.md`` §2.3).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = [
    "AtomoSolution",
    "atomic_second_moment",
    "atomic_variance",
    "atomo_probabilities",
    "atomo_solution",
    "check_budget",
    "uniform_probabilities",
]


def check_budget(budget: float) -> float:
    """``budget`` as a float; a ``ValueError`` unless it is finite and positive."""
    if isinstance(budget, bool) or not isinstance(budget, int | float):
        raise ValueError(f"the sparsity budget must be a number, got {budget!r}")
    if not (math.isfinite(budget) and budget > 0):
        raise ValueError(f"the sparsity budget must be finite and positive, got {budget!r}")
    return float(budget)


def _magnitudes(weights: torch.Tensor) -> torch.Tensor:
    if weights.ndim != 1:
        raise ValueError(f"atom weights must be a 1-D tensor, got shape {tuple(weights.shape)}")
    magnitudes = weights.detach().to(device="cpu", dtype=torch.float64).abs()
    if not torch.isfinite(magnitudes).all():
        raise ValueError("atom weights must be finite")
    return magnitudes


class AtomoSolution(NamedTuple):
    """The optimum of Eq. 3.3 and the two numbers that describe it.

    probs
        ``p`` (float64, one per atom).
    num_capped
        ``n_s``: atoms given ``p = 1`` by capping (all nonzero atoms when ``s ≥ nnz``).
    shared_ratio
        ``|λ_i| / p_i = T / (s - n_s)`` for every uncapped atom (0 when there is none): the
        magnitude every uncapped kept atom is sent with.
    """

    probs: torch.Tensor
    num_capped: int
    shared_ratio: float


def atomo_solution(weights: torch.Tensor, budget: float) -> AtomoSolution:
    """The variance-optimal keep probabilities (Algorithm 1 / Eq. 3.21) in ``O(n log s)``.

    Algorithm 1 caps the atom of rank ``k`` (largest ``|λ|`` first) and decrements the budget
    while ``|λ_(k)| (s - k) > T_k``, with ``T_k = Σ_{j≥k} |λ_(j)|``; the first ``k`` with
    ``|λ_(k)| (s - k) ≤ T_k`` is ``n_s``, and every other atom gets ``|λ| (s - n_s) / T_{n_s}``.
    Capping rank ``k`` implies ``k < s - 1`` (as ``T_k ≥ |λ_(k)|``), so ``n_s < s`` and only the
    top ``⌈s⌉`` atoms are ever examined (App. 3.8's ``O(sn)`` selection remark): no full sort.
    In the balanced case (``s ≤ ‖λ‖₁/‖λ‖_∞``, Lemma 3.4) nothing is capped and no atom is
    ranked at all. Tails are sums of non-negative terms (the top values' suffix sums plus the
    sum of the rest), never differences, so they carry no cancellation error.
    """
    s = check_budget(budget)
    magnitudes = _magnitudes(weights)
    nonzero = int((magnitudes > 0).sum())
    if s >= nonzero:  # nothing to sparsify: keep every nonzero atom
        return AtomoSolution((magnitudes > 0).to(torch.float64), nonzero, 0.0)
    total = float(magnitudes.sum())
    if float(magnitudes.max()) * s <= total:  # balanced: Lemma 3.2's p = |λ| s / ‖λ‖₁
        return AtomoSolution((magnitudes * (s / total)).clamp_(max=1.0), 0, total / s)
    top_values, top_indices = torch.topk(magnitudes, min(math.ceil(s), nonzero))
    rest = float(magnitudes.index_fill(0, top_indices, 0.0).sum())
    tails = rest + top_values.flip(0).cumsum(0).flip(0)
    remaining = s - torch.arange(top_values.numel(), dtype=torch.float64)
    # The last examined rank has s - k in (0, 1], where the test always holds.
    num_capped = int(torch.nonzero(top_values * remaining <= tails)[0])
    shared_ratio = float(tails[num_capped]) / (s - num_capped)
    # At the balance boundary round-off can give 1 + ulp; a probability is at most 1.
    probs = (magnitudes / shared_ratio).clamp_(max=1.0)
    probs[top_indices[:num_capped]] = 1.0
    return AtomoSolution(probs, num_capped, shared_ratio)


def atomo_probabilities(weights: torch.Tensor, budget: float) -> torch.Tensor:
    """The variance-optimal keep probabilities ``p`` (float64, same length as ``weights``).

    Dissertation §3.2, Algorithm 1 / Theorem 3.6 / Eq. 3.21 (see :func:`atomo_solution`).
    ``Σ p = min(s, #nonzero)``, atoms with ``λ_i = 0`` get 0, and ``p`` depends on ``|λ|``
    only (sign-invariant, permutation-equivariant).
    """
    return atomo_solution(weights, budget).probs


def uniform_probabilities(weights: torch.Tensor, budget: float) -> torch.Tensor:
    """The naive baseline ``p_i = min(1, s/n)`` over all ``n`` atoms (spec §2.3)."""
    s = check_budget(budget)
    magnitudes = _magnitudes(weights)
    return torch.full_like(magnitudes, min(1.0, s / max(1, magnitudes.numel())))


def _checked_pair(weights: torch.Tensor, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    magnitudes = _magnitudes(weights)
    p = probs.detach().to(device="cpu", dtype=torch.float64)
    if p.shape != magnitudes.shape:
        raise ValueError(f"{tuple(p.shape)} probabilities for {tuple(magnitudes.shape)} weights")
    if bool(((p <= 0) & (magnitudes > 0)).any()) or bool((p > 1).any()):
        raise ValueError("every atom with a nonzero weight needs a probability in (0, 1]")
    return magnitudes, p


def atomic_second_moment(weights: torch.Tensor, probs: torch.Tensor) -> float:
    """``f(p) = Σ λ_i² / p_i`` (Lemma 3.1): ``E‖ĝ‖²`` for orthonormal atoms.

    Atoms with ``λ_i = 0`` contribute nothing whatever their ``p_i``.
    """
    magnitudes, p = _checked_pair(weights, probs)
    kept = magnitudes > 0
    return float((magnitudes[kept] ** 2 / p[kept]).sum())


def atomic_variance(weights: torch.Tensor, probs: torch.Tensor) -> float:
    """``E‖ĝ - g‖² = Σ λ_i² (1/p_i - 1)`` for orthonormal atoms (Lemma 3.1 minus ``‖g‖²``)."""
    magnitudes, p = _checked_pair(weights, probs)
    kept = magnitudes > 0
    return float((magnitudes[kept] ** 2 * (1.0 / p[kept] - 1.0)).sum())
