"""Strict-majority vote inside a DETOX node group (dissertation Algorithm 5, spec 2.2).

Boyer-Moore's linear-time candidate followed by a counting pass that confirms more than r/2
votes (Boyer-Moore alone returns a candidate even without a majority). Equality is exact and
bytewise by default (spec 6.1): honest replicas must produce identical bytes. ``tolerance``
switches to a symmetric relative comparison for nondeterministic back-ends.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from flower_suite.aggregation.base import check_updates

OnNoMajority = Literal["zero", "drop"]
"""What a node group without a strict majority contributes: the zero vote (seed:2577) or nothing."""

_ON_NO_MAJORITY: tuple[str, ...] = ("zero", "drop")

# Integer dtype of the same width, to compare float rows bit for bit on any device.
_BITS_DTYPE: dict[int, torch.dtype] = {
    1: torch.uint8,
    2: torch.int16,
    4: torch.int32,
    8: torch.int64,
}

_Same = Callable[[int, int], bool]


# --------------------------------------------------------------------------------------------
# Step 1: majority vote inside a node group (Algorithm 5 + counting pass, spec section 2.2)
# --------------------------------------------------------------------------------------------


def _check_vote_options(tolerance: float | None, atol: float, on_no_majority: str) -> None:
    if tolerance is not None and not (math.isfinite(tolerance) and tolerance >= 0.0):
        raise ValueError(f"majority_vote: tolerance must be finite and >= 0, got {tolerance}")
    if not (math.isfinite(atol) and atol >= 0.0):
        raise ValueError(f"majority_vote: atol must be finite and >= 0, got {atol}")
    if on_no_majority not in _ON_NO_MAJORITY:
        raise ValueError(
            f"majority_vote: on_no_majority must be one of {_ON_NO_MAJORITY}, "
            f"got {on_no_majority!r}"
        )


def _same_fn(rows: torch.Tensor, tolerance: float | None, atol: float) -> _Same:
    """Equality between rows ``i`` and ``j`` of ``rows``: bytewise, or symmetric closeness.

    Bytewise equality views the floats as same-width integers (so ``-0.0 != 0.0`` and equal NaN
    payloads compare equal, exactly like comparing SHA-256 digests of the row bytes), and runs
    on the tensor's own device without copies. Tolerance mode accepts ``|a - b| <= atol +
    tolerance * max(|a|, |b|)`` elementwise, a symmetric form of ``allclose``.
    """
    if tolerance is None:
        bits = rows.contiguous().view(_BITS_DTYPE[rows.element_size()])
        return lambda i, j: i == j or torch.equal(bits[i], bits[j])
    rtol = float(tolerance)
    magnitude = rows.abs()

    def close(i: int, j: int) -> bool:
        if i == j:
            return True
        bound = atol + rtol * torch.maximum(magnitude[i], magnitude[j])
        return bool(((rows[i] - rows[j]).abs() <= bound).all())

    return close


def _boyer_moore(members: Sequence[int], same: _Same) -> int:
    """Algorithm 5 (seed:2520-2545): the only possible majority item, which may not be one."""
    candidate, count = members[0], 0
    for i in members:
        if count == 0:
            candidate, count = i, 1
        elif same(candidate, i):
            count += 1
        else:
            count -= 1
    return candidate


def _majority_member(
    members: Sequence[int], same: _Same, *, tolerant: bool, size: int | None = None
) -> int | None:
    """The member whose vector more than ``size / 2`` of ``members`` agree with, or None.

    ``size`` is the group's intended size (default: the members present); members missing
    from ``members`` (dropped clients) count as votes for nobody.

    Boyer-Moore proposes a candidate, a counting pass confirms ``> len/2`` votes. Exact equality
    is an equivalence relation, so a failed count proves there is no majority; the lowest index
    holding the winning bytes is returned. Closeness is not transitive, so in tolerance mode a
    failed candidate is followed by an O(r^2) scan returning the lowest-index member that more
    than half of the group is close to (r is small: 3 to 11 in the dissertation).
    """
    size = len(members) if size is None else size
    if not members:
        return None
    candidate = _boyer_moore(members, same)
    agreeing = [i for i in members if same(candidate, i)]
    if 2 * len(agreeing) > size:
        return candidate if tolerant else agreeing[0]
    if tolerant:
        for c in members:
            if 2 * sum(same(c, i) for i in members) > size:
                return c
    return None


def majority_vote(
    group: torch.Tensor,
    *,
    tolerance: float | None = None,
    atol: float = 0.0,
    on_no_majority: OnNoMajority = "zero",
) -> tuple[torch.Tensor | None, int | None]:
    """Strict-majority vector of the ``r`` results of one node group (DETOX step 1, eq. 7.2).

    ``z = maj(ĝ_1..ĝ_r)`` (seed:2577; spec sections 2.2, 3.9 and 6.1-6.2): Boyer-Moore
    (Algorithm 5) proposes a candidate and a counting pass confirms it has more than ``r/2``
    votes, because Boyer-Moore alone returns a candidate even when no majority exists.

    Parameters
    ----------
    group : torch.Tensor
        ``(r, d)`` floating-point results of the group's members; ``r`` is normally odd.
    tolerance : float or None, default None
        None: exact, bytewise equality (spec 6.1). A float ``rtol``: members agree when
        ``|a - b| <= atol + rtol * max(|a|, |b|)`` elementwise (e.g. ``1e-6``), for
        nondeterministic back-ends.
    atol : float, default 0.0
        Absolute slack of tolerance mode; ignored in exact mode.
    on_no_majority : {"zero", "drop"}, default "zero"
        Without a strict majority return the zero vector (seed behaviour) or ``None``.

    Returns
    -------
    (vector, index) : tuple
        The winning ``(d,)`` vector (a copy, input dtype and device) and the index of a member
        that sent it (in exact mode the lowest such index; in tolerance mode the member the
        others were close to, whose vector is returned). Without a majority: ``(zeros, None)``
        for ``"zero"`` and ``(None, None)`` for ``"drop"``.
    """
    check_updates(group, rule="majority_vote")
    _check_vote_options(tolerance, atol, on_no_majority)
    same = _same_fn(group, tolerance, atol)
    winner = _majority_member(range(group.shape[0]), same, tolerant=tolerance is not None)
    if winner is not None:
        return group[winner].clone(), winner
    if on_no_majority == "drop":
        return None, None
    return torch.zeros_like(group[0]), None


@dataclass(frozen=True)
class VoteResult:
    """Outcome of the per-group majority votes of one round (:func:`group_votes`).

    ``votes``: ``(p̂, d)`` stacked votes, one row per kept node group, in group order
    (``p̂ = len(groups)`` in ``"zero"`` mode, fewer in ``"drop"`` mode).
    ``winners``: per row of ``votes``, the index (into the ``p`` updates) of the member whose
    vector won, or ``None`` for a zero vote. ``group_index``: per row of ``votes``, the node group
    it came from. ``no_majority_groups``: indices of the node groups without a strict majority.
    """

    votes: torch.Tensor
    winners: tuple[int | None, ...]
    group_index: tuple[int, ...]
    no_majority_groups: tuple[int, ...]

    @property
    def selected(self) -> tuple[int, ...]:
        """Indices of the winning members (zero votes have none)."""
        return tuple(i for i in self.winners if i is not None)


def _check_groups(
    groups: Sequence[Sequence[int]], n: int, *, rule: str, group_size: int | None = None
) -> list[list[int]]:
    if len(groups) == 0:
        raise ValueError(f"{rule}: need at least one node group")
    if group_size is not None and group_size < 1:
        raise ValueError(f"{rule}: group_size must be >= 1, not {group_size}")
    owner: dict[int, int] = {}
    checked: list[list[int]] = []
    for g, members in enumerate(groups):
        if len(members) == 0 and group_size is None:
            raise ValueError(f"{rule}: node group {g} is empty")
        if group_size is not None and len(members) > group_size:
            raise ValueError(
                f"{rule}: node group {g} has {len(members)} members, more than group_size "
                f"{group_size}"
            )
        row: list[int] = []
        for raw in members:
            i = int(raw)
            if i != raw or not 0 <= i < n:
                raise ValueError(f"{rule}: node group {g} names node {raw!r}, not in [0, {n})")
            if i in owner:
                raise ValueError(f"{rule}: node {i} appears in node groups {owner[i]} and {g}")
            owner[i] = g
            row.append(i)
        checked.append(row)
    return checked


def group_votes(
    updates: torch.Tensor,
    groups: Sequence[Sequence[int]],
    *,
    tolerance: float | None = None,
    atol: float = 0.0,
    on_no_majority: OnNoMajority = "zero",
    group_size: int | None = None,
) -> VoteResult:
    """Majority vote inside every node group (DETOX step 1, Algorithm 6; spec section 2.2).

    Parameters
    ----------
    updates : torch.Tensor
        ``(p, d)`` results of all compute nodes.
    groups : sequence of sequences of int
        Disjoint node groups (indices into ``updates``), e.g. from :func:`make_node_groups`.
        Nodes that belong to no group are ignored; a group's majority is relative to its size.
    tolerance, atol, on_no_majority
        As in :func:`majority_vote`.
    group_size : int, optional
        The size groups were formed with (DETOX's r). A majority then needs more than
        ``group_size / 2`` agreeing members, so a group that lost members (dropped clients)
        cannot be won by a minority of it; groups may then be empty (no majority).

    Returns
    -------
    VoteResult
        The stacked votes, the winning member of each, and the groups without a majority.
    """
    check_updates(updates, rule="group_votes")
    _check_vote_options(tolerance, atol, on_no_majority)
    checked = _check_groups(groups, updates.shape[0], rule="group_votes", group_size=group_size)
    same = _same_fn(updates, tolerance, atol)
    rows: list[torch.Tensor] = []
    winners: list[int | None] = []
    kept: list[int] = []
    no_majority: list[int] = []
    for g, members in enumerate(checked):
        winner = _majority_member(members, same, tolerant=tolerance is not None, size=group_size)
        if winner is None:
            no_majority.append(g)
            if on_no_majority == "drop":
                continue
            rows.append(torch.zeros_like(updates[0]))
        else:
            rows.append(updates[winner])
        winners.append(winner)
        kept.append(g)
    votes = torch.stack(rows) if rows else updates.new_zeros((0, updates.shape[1]))
    return VoteResult(votes, tuple(winners), tuple(kept), tuple(no_majority))


# --------------------------------------------------------------------------------------------
# Step 2: HIER-AGGR (Algorithm 7)
# --------------------------------------------------------------------------------------------
