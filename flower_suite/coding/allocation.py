"""What every DRACO code shares: the allocation of partitions to nodes, and node encoding.

Dissertation section 6.2 (Definition 6.2): the ``P×P`` allocation matrix ``A`` has
``A[j, k] = 1`` when node ``j`` computes the gradient ``g_k`` of partition ``k``; the redundancy
ratio is ``r = ‖A‖₀ / P``. Theorem 6.5 shows that tolerating ``s`` adversaries needs every
partition to be held by at least ``2s + 1`` nodes.

An *assignment* is ``assignment[j] = (k_0, k_1, ...)``, the partitions node ``j`` holds, and a
node's encoder is linear: ``z_j = Σ_{k ∈ S_j} c_{k,j} g_k`` (``c = 1`` for the repetition code,
``c = W[k, j]`` for the cyclic code). :func:`encode_message` is that sum, taken in ascending
partition order so that replicas of the same computation produce identical bits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from flower_suite.coding.screening import Array, to_numpy

Assignment = tuple[tuple[int, ...], ...]
"""``assignment[j]``: the partitions node ``j`` holds, ascending."""


def allocation_matrix(assignment: Sequence[Sequence[int]], num_partitions: int) -> npt.NDArray:
    """The 0/1 allocation matrix ``A`` (``P × num_partitions``, int8): ``A[j, k] = 1`` iff node
    ``j`` holds partition ``k`` (dissertation section 6.2)."""
    matrix = np.zeros((len(assignment), num_partitions), dtype=np.int8)
    for node, partitions in enumerate(assignment):
        matrix[node, list(partitions)] = 1
    return matrix


def redundancy_ratio(assignment: Sequence[Sequence[int]]) -> float:
    """``r = ‖A‖₀ / P`` (Definition 6.2): the mean number of partitions per node."""
    return sum(len(partitions) for partitions in assignment) / len(assignment)


def partition_holders(assignment: Sequence[Sequence[int]], num_partitions: int) -> Assignment:
    """``holders[k]``: the nodes that hold partition ``k``, ascending."""
    holders: list[list[int]] = [[] for _ in range(num_partitions)]
    for node, partitions in enumerate(assignment):
        for k in partitions:
            holders[k].append(node)
    return tuple(tuple(nodes) for nodes in holders)


def encode_message(
    coefficients: Sequence[tuple[int, complex]],
    gradients: Mapping[int, Array] | Array,
    *,
    complex_valued: bool,
) -> np.ndarray:
    """One node's message ``z_j = Σ_k c_k g_k`` over its ``(partition, coefficient)`` pairs.

    ``gradients`` maps a partition to its gradient (a node holds only its own), or is a
    ``(P, d)`` array with one row per partition. The sum runs in ascending partition order in
    float64 (complex128 for the cyclic code), so two nodes holding the same partitions with the
    same coefficients return bitwise-identical messages (required by the repetition code's
    exact vote, spec section 3).
    """
    dtype = np.complex128 if complex_valued else np.float64
    message: np.ndarray | None = None
    for k, c in sorted(coefficients, key=lambda pair: pair[0]):
        gradient = to_numpy(gradients[k], complex_valued=False)
        if gradient is None or gradient.ndim != 1:
            raise ValueError(f"the gradient of partition {k} must be a real 1-D vector")
        term = gradient * (complex(c) if complex_valued else float(np.real(c)))
        message = term if message is None else message + term
    if message is None:
        raise ValueError("a node must hold at least one partition")
    return message.astype(dtype, copy=False)
