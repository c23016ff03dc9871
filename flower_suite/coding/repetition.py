"""DRACO's fractional repetition code (dissertation section 6.2, Theorem 6.7; spec section 3).

Nodes are split into groups ``Γ_g`` of ``r = 2s + 1`` consecutive nodes; every node of a group
holds the same partitions (the ones with the group's node indices) and sends their plain sum
``z_j = Σ_{k ∈ Γ_g} g_k``. The parameter server decodes

    u = Σ_g Maj(z_j : j ∈ Γ_g),

the sum over groups of the strict-majority message (the dissertation's index range
``(ℓ(r−1)+1):(ℓr)`` is a typo for block ℓ, spec section 3). With at most ``s`` adversaries in
total every group keeps ``s + 1`` identical honest messages, a strict majority, wherever the
adversaries sit (Theorem 6.7, proof in section 6.5.2), so ``u = G·1_P`` exactly: bit for bit
the adversary-free result.

The vote is Boyer-Moore (Algorithm 5, section 6.5.6: one candidate, one counter, one pass)
followed by a counting pass that requires ``⌊|Γ_g|/2⌋ + 1`` agreeing members, because
Boyer-Moore returns a candidate even when no majority exists. Equality is bitwise on float64
(honest replicas must be deterministic, spec section 7.4); ``tolerance`` switches to a
symmetric relative comparison for nondeterministic back-ends (documented on
:func:`majority_vote`).

When ``2s + 1`` does not divide ``P`` (unspecified in the text; section 6.3 only says the group
size was adapted): ``⌊P / (2s + 1)⌋`` groups whose sizes differ by at most one, each at least
``2s + 1``; the guarantee holds because ``size − s > size / 2`` (spec section 3).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from flower_suite.coding.allocation import Assignment, encode_message, redundancy_ratio
from flower_suite.coding.errors import NoMajorityError
from flower_suite.coding.screening import (
    Array,
    FloatArray,
    Screening,
    as_message_matrix,
    check_adversary_budget,
    screen_rows,
)

_Same = Callable[[int, int], bool]


@dataclass(frozen=True)
class RepetitionCode:
    """A fractional repetition code for ``num_nodes`` nodes tolerating ``max_adversaries``.

    ``groups[g]``: the nodes of group ``g`` (consecutive, ascending); each of them holds the
    partitions with the same indices. Build with :func:`make_repetition_code`.
    """

    num_nodes: int
    max_adversaries: int
    groups: tuple[tuple[int, ...], ...]

    @property
    def assignment(self) -> Assignment:
        """``assignment[j]``: the partitions node ``j`` holds (its group's indices)."""
        by_node: dict[int, tuple[int, ...]] = {}
        for group in self.groups:
            by_node.update(dict.fromkeys(group, group))
        return tuple(by_node[j] for j in range(self.num_nodes))

    @property
    def redundancy(self) -> float:
        """``r = ‖A‖₀ / P`` (Definition 6.2); ``2s + 1`` when ``2s + 1`` divides ``P``."""
        return redundancy_ratio(self.assignment)

    def coefficients(self, node: int) -> tuple[tuple[int, complex], ...]:
        """``(partition, coefficient)`` pairs of node ``node``'s encoder: all coefficients 1."""
        return tuple((k, 1.0 + 0j) for k in self.assignment[node])


def make_repetition_code(num_nodes: int, max_adversaries: int) -> RepetitionCode:
    """Groups of ``2s + 1`` consecutive nodes (Theorem 6.7), or ``⌊P/(2s+1)⌋`` groups of sizes
    differing by at most one when ``2s + 1`` does not divide ``P`` (spec section 3)."""
    _check_sizes(num_nodes, max_adversaries)
    num_groups = num_nodes // (2 * max_adversaries + 1)
    base, extra = divmod(num_nodes, num_groups)
    groups, start = [], 0
    for g in range(num_groups):
        size = base + (1 if g < extra else 0)
        groups.append(tuple(range(start, start + size)))
        start += size
    return RepetitionCode(num_nodes, max_adversaries, tuple(groups))


def encode_repetition(code: RepetitionCode, gradients: Array) -> FloatArray:
    """The honest messages ``(P, d)``: ``z_j = Σ_{k ∈ Γ(j)} g_k`` for the ``(P, d)`` partition
    gradients (row ``k`` is ``g_k``). What the nodes compute, for simulation and tests."""
    return np.stack(
        [
            encode_message(code.coefficients(j), gradients, complex_valued=False)
            for j in range(code.num_nodes)
        ]
    )


@dataclass(frozen=True)
class GroupVote:
    """Outcome of one group's vote (:func:`majority_vote`).

    ``winner``: a member holding the majority message (the lowest such index in exact mode),
    or None when no strict majority exists. ``agreeing``: members equal to the winner's
    message. ``disagreeing``: the other members that voted (all of them without a winner).
    """

    winner: int | None
    agreeing: tuple[int, ...]
    disagreeing: tuple[int, ...]


def majority_vote(
    messages: np.ndarray,
    members: Sequence[int],
    *,
    group_size: int | None = None,
    tolerance: float | None = None,
    atol: float = 0.0,
) -> GroupVote:
    """Strict-majority vote among rows ``members`` of ``messages`` (Algorithm 5 + counting pass).

    Parameters
    ----------
    messages : np.ndarray
        ``(P, d)`` float64 messages (rows are read, never copied or modified).
    members : sequence of int
        The rows that vote (a group without its erased members).
    group_size : int, optional
        The group's full size; a majority needs more than ``group_size / 2`` agreeing members,
        so erased members count as votes for nobody. Default ``len(members)``.
    tolerance : float, optional
        None (default): bitwise equality of the float64 rows, an equivalence relation, so a
        failed count proves there is no majority. A float ``rtol``: members agree when
        ``|a − b| <= atol + rtol · max(|a|, |b|)`` elementwise; that relation is not
        transitive, so after a failed count every member is tried as the candidate (O(r²)
        comparisons, r is small) and the first one close to a strict majority wins.
    atol : float
        Absolute slack of tolerance mode (ignored in exact mode).
    """
    size = len(members) if group_size is None else group_size
    if size < len(members):
        raise ValueError(f"group_size {size} is smaller than the {len(members)} members voting")
    if not members:
        return GroupVote(None, (), ())
    same = _equality(messages, tolerance, atol)
    candidates = [_boyer_moore(members, same)]
    if tolerance is not None:
        candidates += [m for m in members if m != candidates[0]]
    for candidate in candidates:
        agreeing = [m for m in members if same(candidate, m)]
        if 2 * len(agreeing) > size:
            winner = candidate if tolerance is not None else min(agreeing)
            agreeing_set = set(agreeing)
            disagreeing = tuple(m for m in members if m not in agreeing_set)
            return GroupVote(winner, tuple(agreeing), disagreeing)
    return GroupVote(None, (), tuple(members))


@dataclass(frozen=True)
class RepetitionDecoding:
    """The decoded round (:func:`decode_repetition`).

    ``total``: ``G·1_P``, float64 ``(d,)``. ``located``: every node known to be bad, sorted:
    the ``screening.erased`` ones and the ``disagreeing`` ones (members that differ from their
    group's majority). ``winners[g]``: the node whose message group ``g`` contributed.
    """

    total: FloatArray
    located: tuple[int, ...]
    disagreeing: tuple[int, ...]
    winners: tuple[int, ...]
    screening: Screening


def decode_repetition(
    code: RepetitionCode,
    messages: Array,
    *,
    erased: Iterable[int] = (),
    max_norm: float | None = None,
    tolerance: float | None = None,
    atol: float = 0.0,
) -> RepetitionDecoding:
    """``u = Σ_g Maj(z_j : j ∈ Γ_g)`` (section 6.2), screened, with the adversaries located.

    Parameters
    ----------
    code : RepetitionCode
    messages : array or tensor
        ``(P, d)`` messages, row ``j`` from node ``j`` (float64; other real dtypes converted).
    erased : iterable of int
        Nodes known to be bad (missing replies, failures): they do not vote and count toward
        ``s``. Rows that are non-finite or above ``max_norm`` are added (:func:`screen_rows`).
    tolerance, atol
        As in :func:`majority_vote`; the default is the exact, bitwise vote.

    Raises
    ------
    TooManyAdversariesError
        More than ``s`` nodes erased, or erased + disagreeing: the code's assumption is
        violated, so even a majority that exists may be adversarial.
    NoMajorityError
        Some group has no strict majority.
    ValueError
        ``messages`` is not ``(P, d)`` real, or an erased index is out of range.

    Beyond ``s`` adversaries the decoder cannot always tell: ``s + 1`` colluders sending one
    identical message in one group of ``2s + 1`` form its majority, and only the ``s`` honest
    members disagree, so the (wrong) sum is returned with those ``s`` honest nodes located.
    Theorem 6.5's bound ``r >= 2s + 1`` makes this unavoidable for any code.
    """
    matrix = as_message_matrix(messages, complex_valued=False)
    if matrix.shape[0] != code.num_nodes:
        raise ValueError(f"expected {code.num_nodes} messages (rows), got {matrix.shape[0]}")
    screening = screen_rows(matrix, erased=erased, max_norm=max_norm)
    s = code.max_adversaries
    check_adversary_budget(screening.erased, s, what="were erased (missing, failed, non-finite)")
    bad = set(screening.erased)
    votes = [
        majority_vote(
            matrix,
            [j for j in group if j not in bad],
            group_size=len(group),
            tolerance=tolerance,
            atol=atol,
        )
        for group in code.groups
    ]
    no_majority = [g for g, vote in enumerate(votes) if vote.winner is None]
    if no_majority:
        raise NoMajorityError(no_majority)
    disagreeing = sorted(j for vote in votes for j in vote.disagreeing)
    located = sorted(bad.union(disagreeing))
    check_adversary_budget(located, s, what="were erased or disagreed with their group")
    winners = tuple(vote.winner for vote in votes if vote.winner is not None)
    total = np.zeros(matrix.shape[1], dtype=np.float64)
    for winner in winners:  # group order: the same additions as the adversary-free decode
        total += matrix[winner]
    return RepetitionDecoding(total, tuple(located), tuple(disagreeing), winners, screening)


def _check_sizes(num_nodes: int, max_adversaries: int) -> None:
    for name, value in (("num_nodes", num_nodes), ("max_adversaries", max_adversaries)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if max_adversaries < 0 or num_nodes < 2 * max_adversaries + 1:
        raise ValueError(
            f"need 0 <= s <= (P - 1)/2 (Theorem 6.5: every partition on 2s + 1 nodes), "
            f"got P={num_nodes}, s={max_adversaries}"
        )


def _equality(messages: np.ndarray, tolerance: float | None, atol: float) -> _Same:
    """``same(i, j)``: rows ``i`` and ``j`` agree (bitwise, or within the tolerance)."""
    if tolerance is None:
        # Same-width integers compare the bits: -0.0 != 0.0, and no float rounding is involved.
        bits = messages.view(np.uint64)
        return lambda i, j: i == j or bool(np.array_equal(bits[i], bits[j]))
    if not (tolerance >= 0 and atol >= 0 and np.isfinite(tolerance) and np.isfinite(atol)):
        raise ValueError(f"tolerance and atol must be finite and >= 0, got {tolerance}, {atol}")
    rtol = float(tolerance)

    def close(i: int, j: int) -> bool:
        a, b = messages[i], messages[j]
        return i == j or bool(np.all(np.abs(a - b) <= atol + rtol * np.maximum(abs(a), abs(b))))

    return close


def _boyer_moore(members: Sequence[int], same: _Same) -> int:
    """Algorithm 5 (section 6.5.6): the only member that can hold a strict majority."""
    candidate, count = members[0], 0
    for m in members:
        if count == 0:
            candidate, count = m, 1
        elif same(candidate, m):
            count += 1
        else:
            count -= 1
    return candidate
