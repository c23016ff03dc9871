"""DRACO's cyclic code: allocation and encoding matrix (dissertation section 6.2; spec section 4).

The ``P`` partitions sit on a circle and node ``j`` holds the ``2s + 1`` consecutive ones
``S_j = {(j + u) mod P : u = 0..2s}``, so partition ``k`` is held by the nodes
``(k − u) mod P`` and ``β_k`` denotes the other ``P − 2s − 1`` nodes. (The text's allocation
formula "positions (i−1)r+1 … i·r mod B" contradicts its circle and collapses to the repetition
code; spec section 10.) Node ``j`` sends the complex vector ``z_j = Σ_{k ∈ S_j} W[k, j] g_k``.

With ``C[a, b] = exp(2πi·a·b/P)/√P`` the unitary IDFT, ``C_L = C[0:P−2s]`` and
``C_R = C[P−2s:P]``, the text builds ``W = [Q 1_P]·C_L`` with row ``k`` of ``[Q 1_P]`` solving a
Vandermonde system that puts zeros on ``β_k`` (section 6.2; spec section 4 step 3, corrected for
its index and transposition slips). Row ``k`` of ``W`` is therefore ``p_k(ω^j)/√P``,
``ω = exp(2πi/P)``, for the *monic* polynomial ``p_k`` of degree ``P − 2s − 1`` whose roots are
``{ω^i : i ∈ β_k}``, that is

    W[k, j] = Π_{i ∈ β_k} (ω^j − ω^i) / √P.

This module evaluates that product directly instead of solving the ``P`` Vandermonde systems:
the zeros on ``β_k`` are then exact (no ``1e-9`` leak of a partition into a node that does not
hold it), and every entry is a product of ``P − 2s − 1`` exactly rounded factors. The tests
check it against the text's construction. Because every row of ``[Q 1_P]`` ends in 1,
``Z = G·W`` satisfies ``Z·C_Rᴴ = 0`` (Lemma 6.14) and ``W[:, U]·b = 1_P`` whenever
``C_L[:, U]·b = e_{P−2s}`` (Lemma 6.8): that is what the decoder in
:mod:`flower_suite.coding.cyclic_decoding` uses.

Numerics: complex128 throughout. ``max|W|`` grows quickly with ``P`` (about 24 at ``P = 15``,
1.8e5 at ``P = 45``, spec section 4) and exactness degrades with it, so codes are limited to
:data:`MAX_CYCLIC_NODES` nodes (use the repetition code for larger ``P``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flower_suite.coding.allocation import Assignment, encode_message, redundancy_ratio
from flower_suite.coding.screening import Array, ComplexArray

MAX_CYCLIC_NODES = 31
"""Largest ``P`` accepted. Measured in float64 (d = 1000, every s, constant, reverse-gradient,
Gaussian and 1e-3 Gaussian attacks of up to s nodes): relative error at most 1.4e-11 up to
``P = 31``, and every located set exact; at ``P = 45`` three of 128 such rounds returned a sum
off by up to 1.6e-5 *without* an error (the locator misses perturbations near the noise floor,
``max|W|`` reaches 1.8e5), so larger codes are refused rather than trusted."""


@dataclass(frozen=True, eq=False)
class CyclicCode:
    """A cyclic code for ``num_nodes`` nodes tolerating ``max_adversaries`` (build with
    :func:`make_cyclic_code`).

    ``encoding_matrix``: ``W`` (``P × P`` complex128, read-only), ``W[k, j]`` the coefficient of
    partition ``k`` in node ``j``'s message (zero unless ``j`` holds ``k``). ``fourier``: the
    unitary IDFT matrix ``C``.
    """

    num_nodes: int
    max_adversaries: int
    encoding_matrix: ComplexArray
    fourier: ComplexArray

    @property
    def assignment(self) -> Assignment:
        """``assignment[j] = S_j``, ascending: ``2s + 1`` consecutive partitions mod ``P``."""
        p, r = self.num_nodes, 2 * self.max_adversaries + 1
        return tuple(tuple(sorted((j + u) % p for u in range(r))) for j in range(p))

    @property
    def redundancy(self) -> float:
        """``r = ‖A‖₀ / P = 2s + 1`` (Definition 6.2)."""
        return redundancy_ratio(self.assignment)

    @property
    def lower_fourier(self) -> ComplexArray:
        """``C_L``: the first ``P − 2s`` rows of ``C`` (the code's generator)."""
        return self.fourier[: self.num_nodes - 2 * self.max_adversaries]

    @property
    def upper_fourier(self) -> ComplexArray:
        """``C_R``: the last ``2s`` rows of ``C`` (the parity checks: ``Z·C_Rᴴ = 0``)."""
        return self.fourier[self.num_nodes - 2 * self.max_adversaries :]

    def coefficients(self, node: int) -> tuple[tuple[int, complex], ...]:
        """``(partition, W[partition, node])`` for the partitions ``node`` holds: what the
        server sends node ``node`` so it can encode (spec section 7.3)."""
        return tuple((k, complex(self.encoding_matrix[k, node])) for k in self.assignment[node])


def fourier_matrix(num_nodes: int) -> ComplexArray:
    """The unitary IDFT matrix ``C[a, b] = exp(2πi·a·b/P)/√P`` (section 6.2). The exponent is
    reduced mod ``P`` first, so every entry is an exactly rounded root of unity."""
    index = np.arange(num_nodes)
    exponent = np.outer(index, index) % num_nodes
    matrix = np.exp(2j * np.pi * exponent / num_nodes) / np.sqrt(num_nodes)
    matrix.setflags(write=False)
    return matrix


def make_cyclic_code(num_nodes: int, max_adversaries: int) -> CyclicCode:
    """The cyclic code of section 6.2 with ``W[k, j] = Π_{i ∈ β_k} (ω^j − ω^i)/√P`` on the
    holders ``j`` of partition ``k`` and 0 elsewhere (module docstring).

    Raises ``ValueError`` unless ``0 <= s <= (P − 1)/2`` (Corollary 6.12) and
    ``1 <= P <= MAX_CYCLIC_NODES``.
    """
    for name, value in (("num_nodes", num_nodes), ("max_adversaries", max_adversaries)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    p, s = num_nodes, max_adversaries
    if s < 0 or p < 2 * s + 1:
        raise ValueError(f"need 0 <= s <= (P - 1)/2 (Corollary 6.12), got P={p}, s={s}")
    if p > MAX_CYCLIC_NODES:
        raise ValueError(
            f"the float64 cyclic code is not exact beyond P = {MAX_CYCLIC_NODES} nodes "
            f"(got P={p}): use the repetition code"
        )
    roots = np.exp(2j * np.pi * np.arange(p) / p)
    encoding = np.zeros((p, p), dtype=np.complex128)
    for k in range(p):
        holders = {(k - u) % p for u in range(2 * s + 1)}
        others = np.array([i for i in range(p) if i not in holders], dtype=np.intp)
        for j in holders:
            encoding[k, j] = np.prod(roots[j] - roots[others]) / np.sqrt(p)
    encoding.setflags(write=False)
    return CyclicCode(p, s, encoding, fourier_matrix(p))


def encode_cyclic(code: CyclicCode, gradients: Array) -> ComplexArray:
    """The honest messages ``Z = G·W`` as rows ``(P, d)`` complex128 for the ``(P, d)``
    partition gradients (row ``k`` is ``g_k``): what the nodes compute, for simulation and
    tests. Each row uses only the node's own partitions (:func:`encode_message`)."""
    return np.stack(
        [
            encode_message(code.coefficients(j), gradients, complex_valued=True)
            for j in range(code.num_nodes)
        ]
    )
