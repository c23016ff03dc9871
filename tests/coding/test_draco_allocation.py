"""Allocation of both DRACO codes (spec draco.md section 8.1) and the shared node encoder."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from flower_suite.coding import (
    MAX_CYCLIC_NODES,
    allocation_matrix,
    encode_message,
    make_cyclic_code,
    make_repetition_code,
    partition_holders,
    redundancy_ratio,
)

SIZES = [(p, s) for p in (3, 5, 7, 9, 15) for s in range((p - 1) // 2 + 1)]


@pytest.mark.parametrize(("p", "s"), SIZES)
def test_cyclic_every_partition_on_2s_plus_1_nodes(p: int, s: int) -> None:
    code = make_cyclic_code(p, s)
    a = allocation_matrix(code.assignment, p)
    assert (a.sum(axis=0) == 2 * s + 1).all() and (a.sum(axis=1) == 2 * s + 1).all()
    assert code.redundancy == redundancy_ratio(code.assignment) == 2 * s + 1
    # node j holds the 2s + 1 consecutive partitions j, j+1, ..., j+2s (mod P)
    assert code.assignment[p - 1] == tuple(sorted((p - 1 + u) % p for u in range(2 * s + 1)))


@pytest.mark.parametrize(("p", "s"), [*SIZES, (10, 2), (11, 2), (45, 3), (45, 5)])
def test_repetition_every_partition_on_at_least_2s_plus_1_nodes(p: int, s: int) -> None:
    code = make_repetition_code(p, s)
    a = allocation_matrix(code.assignment, p)
    holders = partition_holders(code.assignment, p)
    assert sorted(j for g in code.groups for j in g) == list(range(p))
    assert min(len(g) for g in code.groups) >= 2 * s + 1
    assert max(len(g) for g in code.groups) - min(len(g) for g in code.groups) <= 1
    # block diagonal: a partition is held by exactly the nodes of its group
    for group in code.groups:
        for k in group:
            assert holders[k] == group
    assert (a == a.T).all()
    if p % (2 * s + 1) == 0:
        assert code.redundancy == 2 * s + 1 and len(code.groups) == p // (2 * s + 1)


@pytest.mark.parametrize("make", [make_repetition_code, make_cyclic_code])
def test_sizes_outside_the_bound_are_refused(make: Callable[[int, int], object]) -> None:
    with pytest.raises(ValueError, match=r"s <= \(P - 1\)/2"):
        make(4, 2)  # Corollary 6.12: s <= (P - 1)/2
    with pytest.raises(ValueError):
        make(3, -1)
    with pytest.raises(TypeError):
        make(3.0, 1)  # type: ignore[arg-type]


def test_cyclic_code_refuses_sizes_where_float64_is_not_exact() -> None:
    make_cyclic_code(MAX_CYCLIC_NODES, 3)
    with pytest.raises(ValueError, match="repetition code"):
        make_cyclic_code(MAX_CYCLIC_NODES + 2, 3)


def test_encode_message_is_bitwise_deterministic_and_order_free() -> None:
    rng = np.random.default_rng(0)
    gradients = {k: rng.standard_normal(50) for k in (4, 1, 7)}
    pairs = [(7, 1.0), (1, 1.0), (4, 1.0)]
    first = encode_message(pairs, gradients, complex_valued=False)
    second = encode_message(
        list(reversed(pairs)), dict(reversed(gradients.items())), complex_valued=False
    )
    assert first.tobytes() == second.tobytes()
    assert first.tobytes() == ((gradients[1] + gradients[4]) + gradients[7]).tobytes()
    as_torch = {k: torch.from_numpy(v) for k, v in gradients.items()}
    assert encode_message(pairs, as_torch, complex_valued=False).tobytes() == first.tobytes()


def test_encode_message_rejects_what_a_node_cannot_encode() -> None:
    with pytest.raises(ValueError, match="at least one"):
        encode_message([], {}, complex_valued=False)
    with pytest.raises(ValueError, match="real 1-D"):
        encode_message([(0, 1.0)], {0: np.ones((2, 2))}, complex_valued=False)
    with pytest.raises(ValueError, match="real 1-D"):
        encode_message([(0, 1.0)], {0: np.ones(2) * 1j}, complex_valued=True)


def test_coefficients_are_what_the_node_needs() -> None:
    code = make_cyclic_code(7, 2)
    for j in range(7):
        pairs = code.coefficients(j)
        assert [k for k, _ in pairs] == list(code.assignment[j])
        assert all(c != 0 for _, c in pairs)
    assert make_repetition_code(6, 1).coefficients(4) == ((3, 1.0), (4, 1.0), (5, 1.0))
