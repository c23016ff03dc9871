"""Group-wise secure aggregation: which clients mask together, and how large a group may be.

Secure aggregation hands the server one sum, so a robust rule has nothing to inspect. Split
each round's ``n`` sampled clients into ``G = n // g`` groups of ``g`` to ``2g - 1`` clients
(sizes differing by at most one), run
one SecAgg+ instance per group, and the server sees ``G`` group means instead: a robust rule
over them is HIER-AGGR with a secure mean inside (DETOX, dissertation ch. 7, Algorithm 7:
``A0`` = the group's weighted mean, ``A1`` = the robust rule; "median of means").

The trade-off, stated exactly:

- **privacy**: the server learns the weighted mean of each group, i.e. of at least ``g``
  clients (``g - 1`` others hide each client's update), instead of the mean of all ``n``;
  a group that loses members below its threshold aborts and reveals nothing;
- **robustness**: ``f`` Byzantine clients corrupt at most ``f`` groups, whatever the
  assignment; the rule must tolerate ``f`` corrupted inputs out of ``G``
  (:func:`~flower_suite.aggregation.requirements.min_inputs_tolerating`), so
  ``n // g >= min_inputs_tolerating(rule, f)``.

:func:`choose_group_size` picks the largest ``g`` that keeps the rule robust (most privacy
per group), or raises if even the smallest useful group breaks the rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flower_suite.aggregation.requirements import min_inputs_tolerating

# SecAgg needs at least 3 clients in a protocol instance (SecAggConfig.resolve).
MIN_GROUP_SIZE = 3

# Separates the group-assignment stream from every other stream derived from the seed.
_GROUP_STREAM = 0x6A7B


def check_group_size(group_size: object) -> int:
    """``group_size`` must be an int >= 3 (the smallest secure-aggregation instance)."""
    if isinstance(group_size, bool) or not isinstance(group_size, int):
        raise ValueError(f"group_size must be an integer, not {group_size!r}")
    if group_size < MIN_GROUP_SIZE:
        raise ValueError(
            f"group_size must be >= {MIN_GROUP_SIZE} (a secure-aggregation instance needs "
            f"at least {MIN_GROUP_SIZE} clients), got {group_size}"
        )
    return group_size


def num_groups(num_clients: int, group_size: int) -> int:
    """``n // g``: the groups ``n`` clients form (each of ``g`` to ``2g - 1`` clients)."""
    check_group_size(group_size)
    return num_clients // group_size


def assign_groups(
    nodes: Sequence[int], group_size: int, *, seed: int, server_round: int
) -> list[list[int]]:
    """Split ``nodes`` into ``len(nodes) // group_size`` random groups for ``server_round``.

    The permutation of the sorted node ids is drawn from ``(seed, server_round)`` alone, so
    the groups depend on which nodes were sampled, not on their order; a run repeats exactly
    and no client can choose its group. Sizes differ by at most one and lie in
    ``[group_size, 2 group_size - 1]`` (the leftover ``n - G g`` clients are spread over
    the groups, the first ones getting one more). Each group lists its nodes in ascending
    order. Raises ``ValueError`` when fewer than ``group_size`` nodes are given or
    a node id repeats.
    """
    check_group_size(group_size)
    if len(set(nodes)) != len(nodes):
        raise ValueError("node ids must be distinct")
    count = len(nodes) // group_size
    if count == 0:
        raise ValueError(
            f"{len(nodes)} clients cannot form a group of {group_size}: the server would see "
            "the mean of fewer clients than group_size promises"
        )
    ordered = sorted(int(node) for node in nodes)  # the sampling order plays no part
    rng = np.random.default_rng([_GROUP_STREAM, seed, server_round])
    order = rng.permutation(len(ordered))
    extra = len(nodes) - count * group_size  # < group_size, spread evenly over the groups
    sizes = [group_size + extra // count + (1 if i < extra % count else 0) for i in range(count)]
    groups, start = [], 0
    for size in sizes:
        members = sorted(int(i) for i in order[start : start + size])
        groups.append([ordered[i] for i in members])
        start += size
    return groups


def max_corrupted_groups(num_byzantine: int, groups: int) -> int:
    """``f`` Byzantine clients corrupt at most ``min(f, G)`` groups, whatever the assignment."""
    return min(num_byzantine, groups)


def choose_group_size(
    num_clients: int,
    num_byzantine: int,
    *,
    rule: str = "median",
    min_group_size: int = MIN_GROUP_SIZE,
) -> int:
    """The largest group size ``g >= min_group_size`` with which ``rule`` over the
    ``n // g`` group means still tolerates ``num_byzantine`` Byzantine clients.

    ``min_group_size`` is the privacy target (the server sees means of at least that many
    clients). Raises ``ValueError`` naming the largest feasible ``g`` when the target cannot
    be met: then lower the target, sample more clients or accept fewer Byzantine clients.
    """
    check_group_size(min_group_size)
    if num_byzantine < 0:
        raise ValueError(f"num_byzantine must be >= 0, got {num_byzantine}")
    needed = min_inputs_tolerating(rule, num_byzantine)
    largest = num_clients // needed
    if largest < min_group_size:
        raise ValueError(
            f"{rule} needs {needed} group means to tolerate {num_byzantine} Byzantine clients; "
            f"{num_clients} clients give that many groups only with groups of at most "
            f"{largest}, below the target size {min_group_size}"
        )
    return largest


def tolerated_byzantine(num_clients: int, group_size: int, *, rule: str = "median") -> int:
    """The most Byzantine clients ``rule`` over the group means of ``num_clients`` clients in
    groups of ``group_size`` tolerates (``-1``: not even zero, too few groups for the rule)."""
    groups = num_groups(num_clients, group_size)
    if min_inputs_tolerating(rule, 0) > groups:
        return -1
    f = 0
    while f < groups:
        try:
            if min_inputs_tolerating(rule, f + 1) > groups:
                break
        except ValueError:  # the rule tolerates no Byzantine input at all (the mean)
            break
        f += 1
    return f
