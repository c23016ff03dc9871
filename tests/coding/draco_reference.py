"""Slow, obviously correct references and attack helpers for the DRACO coding tests.

- :func:`spec_encoding_matrix`: ``W = [Q 1_P]·C_L`` exactly as the spec (section 4 step 3)
  builds it, one Vandermonde solve per partition.
- :func:`reference_repetition_decode`: per group, count identical byte strings (``Counter``).
- :func:`reference_cyclic_decode`: brute force over every set ``V`` of ``s`` erased nodes, in
  lexicographic order; the first whose complement is a codeword *in full* (every coordinate,
  no random projection) decodes, with the text's square solve on the first ``P − 2s`` kept
  nodes. Any consistent ``V`` gives the same sum when at most ``s`` nodes are bad, because
  two codewords that agree on ``P − 2s`` nodes are equal (minimum distance ``2s + 1``).
"""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np

from flower_suite.coding import CyclicCode, RepetitionCode, fourier_matrix

ATTACKS = ("constant", "reverse", "gaussian", "colluding", "tiny")


def spec_encoding_matrix(num_nodes: int, max_adversaries: int) -> np.ndarray:
    """``W`` by the spec's Vandermonde solves: row ``k`` is ``[q_k, 1]·C_L`` with
    ``q_kᵀ·C_L[0:m, β_k] = −C_L[m, β_k]``, ``m = P − 2s − 1``."""
    p, s = num_nodes, max_adversaries
    lower = fourier_matrix(p)[: p - 2 * s]
    m = p - 2 * s - 1
    rows = []
    for k in range(p):
        holders = {(k - u) % p for u in range(2 * s + 1)}
        others = [j for j in range(p) if j not in holders]
        q = np.linalg.solve(lower[:m, others].T, -lower[m, others]) if m else np.zeros(0)
        rows.append(np.concatenate([q, [1.0]]))
    return np.array(rows) @ lower


def attack(
    messages: np.ndarray, adversaries: list[int], kind: str, rng: np.random.Generator
) -> np.ndarray:
    """A copy of ``messages`` with the rows ``adversaries`` replaced (spec section 5 attacks).

    ``constant``: ``−100·1`` (real part only for complex messages); ``reverse``: ``−100·z``;
    ``gaussian``: ``z + N(0, I)``; ``colluding``: one shared random vector for all;
    ``tiny``: ``z + 1e-3·N(0, I)``, near the noise floor.
    """
    out = messages.copy()
    shape = messages.shape[1]
    shared = rng.standard_normal(shape) * 10
    for j in adversaries:
        if kind == "constant":
            out[j] = -100.0
        elif kind == "reverse":
            out[j] = -100.0 * messages[j]
        elif kind == "gaussian":
            out[j] = messages[j] + rng.standard_normal(shape)
        elif kind == "colluding":
            out[j] = shared
        elif kind == "tiny":
            out[j] = messages[j] + 1e-3 * rng.standard_normal(shape)
        else:
            raise ValueError(kind)
    return out


def reference_repetition_decode(
    code: RepetitionCode, messages: np.ndarray, erased: set[int]
) -> tuple[np.ndarray, set[int]] | None:
    """The sum of every group's strict-majority message and the nodes that differ, or None
    when some group has no strict majority (of its full size)."""
    winners = []
    located = set(erased)
    for group in code.groups:
        present = [j for j in group if j not in erased]
        counts = Counter(messages[j].tobytes() for j in present)
        if not counts:
            return None
        value, count = counts.most_common(1)[0]
        if 2 * count <= len(group):
            return None
        winner = next(j for j in present if messages[j].tobytes() == value)
        winners.append(messages[winner])
        located |= {j for j in present if messages[j].tobytes() != value}
    total = np.zeros(messages.shape[1])
    for row in winners:
        total += row
    return total, located


def reference_cyclic_decode(
    code: CyclicCode, messages: np.ndarray, *, relative_residual: float = 1e-9
) -> tuple[np.ndarray, tuple[int, ...]] | None:
    """Brute force: the first ``V`` (``|V| = s``, lexicographic) whose kept rows ``R[U]`` are
    ``C_L[:, U]ᵀ·X`` for some ``X`` to ``relative_residual``; the decoded sum and ``V``. None
    when no ``V`` works (more than ``s`` adversaries, detected)."""
    p, s = code.num_nodes, code.max_adversaries
    lower = code.lower_fourier
    finite = [j for j in range(p) if np.isfinite(messages[j]).all()]
    for excluded in itertools.combinations(range(p), s):
        kept = [j for j in range(p) if j not in excluded]
        if not set(kept) <= set(finite):
            continue
        basis = lower[:, kept].T
        fitted = basis @ np.linalg.lstsq(basis, messages[kept], rcond=None)[0]
        residual = np.linalg.norm(messages[kept] - fitted)
        if residual <= relative_residual * max(np.linalg.norm(messages[kept]), 1e-300):
            square = kept[: p - 2 * s]
            unit = np.zeros(p - 2 * s, dtype=complex)
            unit[-1] = 1.0
            b = np.linalg.solve(lower[:, square], unit)
            return (b @ messages[square]).real, excluded
    return None


def colluding_codeword(code: CyclicCode, support: list[int]) -> np.ndarray:
    """A nonzero codeword (row of ``x·C_L``) that vanishes outside ``support`` (``2s + 1``
    nodes): ``w_j = Π_{i ∉ support} (ω^j − ω^i)``, a polynomial of degree ``P − 2s − 1`` in
    ``ω^j``. Its coefficient on the last row of ``C_L`` is ``√P``."""
    p = code.num_nodes
    roots = np.exp(2j * np.pi * np.arange(p) / p)
    outside = [i for i in range(p) if i not in support]
    return np.array([np.prod(roots[j] - roots[outside]) for j in range(p)])


def relative_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(estimate - truth) / np.linalg.norm(truth))
