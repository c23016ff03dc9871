"""DETOX: Byzantine-resilient training via redundant gradients (dissertation chapter 7).

Framework-free core of DETOX (robust-aggregation spec section 2; Algorithms 6-7 of the
dissertation). The ``p`` compute nodes are split once into ``p/r`` node groups of odd size
``r`` whose members all compute the *same* mean gradient (eq. 7.2). The parameter server then

1. takes the strict-majority vector of each node group (:func:`majority_vote`, Boyer-Moore as in
   Algorithm 5 plus a confirming counting pass; no majority gives the zero vector, seed
   behaviour, or the group is dropped), and
2. runs HIER-AGGR (:func:`hier_aggr`, Algorithm 7): the ``p̂ = p/r`` votes are randomly
   partitioned into ``k`` vote groups, ``A0`` (``inner``) aggregates every vote group and ``A1``
   (``outer``) aggregates the ``k`` results.

:func:`detox_aggregate` chains both steps. The aggregation rules ``A0``/``A1`` are supplied by
the caller as callables ``(n, d) tensor -> AggregationResult`` (e.g.
``functools.partial(trimmed_mean, beta=0.25)``), so this module depends on no particular rule.
The set-up side lives in :mod:`flower_suite.aggregation.detox_setup` and is re-exported here:
:func:`make_node_groups` draws the node groups, :func:`check_vote_group_rule` validates a
configuration once (spec section 6.4), and :func:`expected_byzantine_groups` /
:func:`max_byzantine_groups` give the filtering statistics of section 2.3.

Equality in the vote is exact and bytewise by default (spec section 6.1): honest members of a
group must produce identical bytes, which needs identical batches, seeds and deterministic
kernels. ``tolerance`` switches to a symmetric relative comparison for nondeterministic
back-ends. DETOX assigns the same data to several nodes, so it is not privacy-preserving
(seed:2700); in Flower it only makes sense in simulation.

Example
-------
>>> import functools
>>> from flower_suite.aggregation.base import AggregationResult
>>> def mean(x: torch.Tensor) -> AggregationResult:
...     return AggregationResult(x.mean(dim=0))
>>> honest = torch.ones(3)
>>> updates = torch.stack([honest, honest, torch.full((3,), 9.0), honest, honest, honest])
>>> groups = [[0, 1, 2], [3, 4, 5]]
>>> result = detox_aggregate(updates, groups, num_vote_groups=1, inner=mean, outer=mean, seed=0)
>>> result.aggregate
tensor([1., 1., 1.])
>>> result.selected
(0, 3)
>>> round(expected_byzantine_groups(45, 5, 3), 4)
0.4334
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from flower_suite.aggregation.base import AggregationResult, check_updates
from flower_suite.aggregation.detox_setup import (
    byzantine_majority_groups,
    check_vote_group_rule,
    expected_byzantine_groups,
    make_node_groups,
    max_byzantine_groups,
)
from flower_suite.aggregation.majority import (
    OnNoMajority,
    VoteResult,
    group_votes,
    majority_vote,
)

__all__ = [
    "Aggregator",
    "OnNoMajority",
    "VoteResult",
    "byzantine_majority_groups",
    "check_vote_group_rule",
    "detox_aggregate",
    "expected_byzantine_groups",
    "group_votes",
    "hier_aggr",
    "majority_vote",
    "make_node_groups",
    "max_byzantine_groups",
]

Aggregator = Callable[[torch.Tensor], AggregationResult]
"""An aggregation rule with everything but the ``(n, d)`` input bound (``A0`` / ``A1``)."""


def _generator(rng: torch.Generator | int) -> torch.Generator:
    if isinstance(rng, torch.Generator):
        return rng
    if isinstance(rng, bool) or not isinstance(rng, int):
        raise TypeError(f"rng must be a torch.Generator or an int seed, got {type(rng).__name__}")
    return torch.Generator().manual_seed(rng)


def _mean_info(results: Sequence[AggregationResult]) -> dict[str, float]:
    keys = sorted({key for res in results for key in res.info})
    out: dict[str, float] = {}
    for key in keys:
        values = [float(res.info[key]) for res in results if key in res.info]
        out[f"inner_{key}"] = sum(values) / len(values)
    return out


def hier_aggr(
    votes: torch.Tensor,
    *,
    num_vote_groups: int,
    inner: Aggregator,
    outer: Aggregator,
    rng: torch.Generator | int,
    allow_uneven: bool = False,
) -> AggregationResult:
    """HIER-AGGR(A0, A1, k) over the DETOX votes (Algorithm 7, seed:2587-2595; spec 2.2, 3.10).

    The ``p̂`` votes are randomly permuted and split into ``k`` vote groups ``Z_j`` of size
    ``p̂/k``; ``ẑ_j = inner(Z_j).aggregate`` and the result is ``outer(stack(ẑ)).aggregate``.
    ``k = 1`` is ``outer(inner(all votes))`` with the votes in their given order (no permutation).
    With ``inner = mean`` and a robust ``outer`` this is median-of-means (seed:2612).

    Parameters
    ----------
    votes : torch.Tensor
        ``(p̂, d)`` votes (e.g. ``VoteResult.votes``).
    num_vote_groups : int
        ``k``, with ``1 <= k <= p̂``.
    inner, outer : Aggregator
        ``A0`` and ``A1``: callables ``(n, d) tensor -> AggregationResult``.
    rng : torch.Generator or int
        Source of the random partition; an int is a seed, so results are reproducible.
    allow_uneven : bool, default False
        ``k`` must divide ``p̂`` (spec 6.5) unless this is True; then the vote groups differ in
        size by at most one (the first ``p̂ mod k`` groups get the extra vote), like the
        dissertation's 7 + 8 split for D-Multi-Krum (seed:2872). Useful in ``"drop"`` mode, where
        ``p̂`` varies from round to round.

    Returns
    -------
    AggregationResult
        ``selected`` lists the votes that reached the result (inner selections inside the vote
        groups the outer rule used); empty when every vote contributes. ``info`` has
        ``num_votes``, ``num_vote_groups``, ``min_vote_group_size``, the outer rule's info
        prefixed ``outer_`` and the inner rules' info averaged and prefixed ``inner_``.
    """
    check_updates(votes, rule="hier_aggr")
    n = votes.shape[0]
    k = num_vote_groups
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"hier_aggr requires 1 <= num_vote_groups <= p̂ (got k={k}, p̂={n})")
    if n % k != 0 and not allow_uneven:
        raise ValueError(
            f"hier_aggr requires num_vote_groups to divide the number of votes "
            f"(got p̂={n}, k={k}); pass allow_uneven=True for sizes differing by one"
        )
    if k == 1:
        order = torch.arange(n)
    else:
        gen = _generator(rng)
        order = torch.randperm(n, generator=gen, device=gen.device).cpu()
    parts = [part.tolist() for part in torch.tensor_split(order, k)]
    inner_results = [inner(votes[torch.tensor(part, device=votes.device)]) for part in parts]
    outer_result = outer(torch.stack([res.aggregate for res in inner_results]))

    used: set[int] = set()
    for j in outer_result.selected or range(k):
        chosen = inner_results[j].selected
        if chosen:
            used.update(parts[j][s] for s in chosen)
        else:
            used.update(parts[j])
    selected = () if len(used) == n else tuple(sorted(used))
    info: dict[str, float] = {
        "num_votes": float(n),
        "num_vote_groups": float(k),
        "min_vote_group_size": float(n // k),
    }
    info.update(_mean_info(inner_results))
    info.update({f"outer_{key}": float(value) for key, value in outer_result.info.items()})
    return AggregationResult(outer_result.aggregate, selected, info)


def detox_aggregate(
    updates: torch.Tensor,
    groups: Sequence[Sequence[int]],
    *,
    num_vote_groups: int,
    inner: Aggregator,
    outer: Aggregator,
    seed: torch.Generator | int,
    tolerance: float | None = None,
    atol: float = 0.0,
    on_no_majority: OnNoMajority = "zero",
    allow_uneven: bool = False,
    group_size: int | None = None,
) -> AggregationResult:
    """One DETOX aggregation at the PS: majority votes, then HIER-AGGR (Algorithm 6, spec 2.2).

    Equivalent to ``hier_aggr(group_votes(updates, groups, ...).votes, ...)``. Every node has
    the same batch size in DETOX, so there are no weights.

    Parameters
    ----------
    updates : torch.Tensor
        ``(p, d)`` results of all compute nodes (flattened, spec section 1).
    groups : sequence of sequences of int
        The node groups, fixed for the whole run (:func:`make_node_groups`).
    num_vote_groups, inner, outer, allow_uneven
        As in :func:`hier_aggr` (``k``, ``A0``, ``A1``).
    group_size
        As in :func:`group_votes`: pass r when members may be missing.
    seed : torch.Generator or int
        Randomness of the vote-group partition; draw a new one per round for fresh partitions.
    tolerance, atol, on_no_majority
        As in :func:`majority_vote`.

    Returns
    -------
    AggregationResult
        ``selected``: the winning member (index into ``updates``) of every vote that reached the
        result, ascending; zero votes have no member. ``info``: ``no_majority_groups`` (count),
        ``num_node_groups`` and everything :func:`hier_aggr` reports.

    Raises
    ------
    ValueError
        Bad inputs, or ``"drop"`` mode with no node group reaching a majority.
    """
    vote = group_votes(
        updates,
        groups,
        tolerance=tolerance,
        atol=atol,
        on_no_majority=on_no_majority,
        group_size=group_size,
    )
    if vote.votes.shape[0] == 0:
        raise ValueError(
            f"detox: none of the {len(groups)} node groups reached a strict majority "
            f"(on_no_majority='drop'); nothing to aggregate"
        )
    hier = hier_aggr(
        vote.votes,
        num_vote_groups=num_vote_groups,
        inner=inner,
        outer=outer,
        rng=seed,
        allow_uneven=allow_uneven,
    )
    used = hier.selected or range(len(vote.winners))
    selected = sorted(w for w in (vote.winners[v] for v in used) if w is not None)
    info = {
        "no_majority_groups": float(len(vote.no_majority_groups)),
        "num_node_groups": float(len(groups)),
        **hier.info,
    }
    return AggregationResult(hier.aggregate, tuple(selected), info)
