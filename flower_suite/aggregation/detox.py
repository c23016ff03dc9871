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
:func:`check_vote_group_rule` validates a configuration once (spec section 6.4), and
:func:`expected_byzantine_groups` / :func:`max_byzantine_groups` give the filtering statistics
of section 2.3.

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

import logging
import math
from collections.abc import Callable, Collection, Sequence

import torch

from flower_suite.aggregation.base import AggregationResult, check_updates
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

logger = logging.getLogger("flower_suite.aggregation.detox")

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


# --------------------------------------------------------------------------------------------
# Set-up helpers and filtering statistics (spec sections 2.2, 2.3, 6.4, 6.5)
# --------------------------------------------------------------------------------------------


def _check_redundancy(r: int, *, rule: str) -> None:
    if isinstance(r, bool) or not isinstance(r, int) or r < 1 or r % 2 == 0:
        raise ValueError(
            f"{rule}: the redundancy ratio r must be a positive odd integer (got r={r})"
        )


def make_node_groups(p: int, r: int, seed: int, *, allow_leftover: bool = False) -> list[list[int]]:
    """Random partition of the nodes ``[p]`` into ``p/r`` node groups of size ``r`` (Alg. 6).

    Done once per run (seed:2573). ``r`` must be odd (ties are impossible) and divide ``p``
    (spec 6.5). With ``allow_leftover=True`` the ``p mod r`` leftover nodes join the last group
    instead, provided its size stays odd. Each group is sorted; the group order is random.

    >>> make_node_groups(6, 3, seed=0)
    [[2, 3, 5], [0, 1, 4]]
    """
    _check_redundancy(r, rule="make_node_groups")
    if isinstance(p, bool) or not isinstance(p, int) or p < r:
        raise ValueError(f"make_node_groups requires p >= r >= 1 (got p={p}, r={r})")
    leftover = p % r
    if leftover and not allow_leftover:
        raise ValueError(
            f"make_node_groups requires r to divide p (got p={p}, r={r}); "
            f"pass allow_leftover=True to add the {leftover} leftover nodes to the last group"
        )
    if leftover % 2 == 1:
        raise ValueError(
            f"make_node_groups: the last group would have even size {r + leftover} "
            f"(p={p}, r={r}); choose p, r with p mod r even"
        )
    perm = torch.randperm(p, generator=torch.Generator().manual_seed(seed)).tolist()
    num_groups = p // r
    groups = [sorted(perm[g * r : (g + 1) * r]) for g in range(num_groups)]
    groups[-1] = sorted(groups[-1] + perm[num_groups * r :])
    return groups


def byzantine_majority_groups(groups: Sequence[Sequence[int]], byzantine: Collection[int]) -> int:
    """``q̂``: the number of node groups in which Byzantine nodes hold a strict majority."""
    bad = set(byzantine)
    return sum(2 * sum(i in bad for i in members) > len(members) for members in groups)


def expected_byzantine_groups(p: int, q: int, r: int) -> float:
    """Exact ``E[q̂]`` over random node groups (spec 2.3, seed:2716).

    ``E[q̂] = (p/r) · Σ_{i=0}^{(r-1)/2} C(q, r-i) C(p-q, i) / C(p, r)``: the number of groups
    times the hypergeometric probability that at most ``(r-1)/2`` of a group's ``r`` members are
    honest. E.g. ``p=45, q=5``: 0.4334 (r=3), 0.0589 (r=5), 0.0071 (r=7).
    """
    _check_redundancy(r, rule="expected_byzantine_groups")
    if not 0 <= q <= p or r > p:
        raise ValueError(
            f"expected_byzantine_groups requires 0 <= q <= p and r <= p (got p={p}, q={q}, r={r})"
        )
    numerator = sum(math.comb(q, r - i) * math.comb(p - q, i) for i in range((r - 1) // 2 + 1))
    return p * numerator / (r * math.comb(p, r))


def max_byzantine_groups(q: int, r: int) -> int:
    """Worst-case ``q̂_max = ⌊q / ((r+1)/2)⌋`` (spec 2.3): a Byzantine group needs (r+1)/2 of q."""
    _check_redundancy(r, rule="max_byzantine_groups")
    if q < 0:
        raise ValueError(f"max_byzantine_groups requires q >= 0 (got q={q})")
    return q // ((r + 1) // 2)


_MEAN_RULES = frozenset({"mean", "weighted_mean", "fedavg", "identity"})
_MAJORITY_RULES = frozenset(
    {"median", "coordinate_median", "trimmed_mean", "geometric_median", "rfa", "sign_majority"}
)
_KRUM_RULES = frozenset({"krum", "multi_krum", "multikrum"})
_BULYAN_RULES = frozenset({"bulyan"})
_KNOWN_RULES = _MEAN_RULES | _MAJORITY_RULES | _KRUM_RULES | _BULYAN_RULES | {"custom"}


def _rule_key(name: str, *, role: str) -> str:
    key = name.strip().lower().replace("-", "_")
    if key not in _KNOWN_RULES:
        raise ValueError(
            f"check_vote_group_rule: unknown {role} rule {name!r} "
            f"(known: {', '.join(sorted(_KNOWN_RULES))}; 'custom' skips the rule checks)"
        )
    return key


def check_vote_group_rule(
    *,
    num_nodes: int,
    num_byzantine: int,
    redundancy: int,
    num_vote_groups: int,
    inner: str = "mean",
    outer: str = "median",
    num_votes: int | None = None,
) -> int:
    """Validate a DETOX configuration against the vote-group rule (spec 6.4) and return q̂_max.

    Call once when configuring DETOX. With ``p̂ = num_votes`` (default ``p // r``) votes,
    ``k = num_vote_groups`` and ``q̂_max = ⌊q / ((r+1)/2)⌋`` (capped at ``p̂``):

    - ``inner`` Multi-Krum / Krum: raise ``ValueError`` unless ``⌊p̂/k⌋ >= 2q̂_max+3``; Bulyan:
      unless ``⌊p̂/k⌋ >= 4q̂_max+3`` (sized with q̂, not q: seed:2871-2872). The same sizes are
      required of ``k`` when these rules are the ``outer`` rule.
    - ``outer`` median, trimmed mean (and the other breakdown-1/2 rules: geometric median,
      sign majority): log a WARNING when ``k < 2q̂_max+1``, but do not fail (the paper's ALIE
      setting, k = 3, breaks the rule deliberately).
    - a WARNING when there are fewer than 5 vote groups and ``outer`` is not the mean (with
      ``outer = mean`` the robustness rests on ``inner``, e.g. D-Bulyan with ``k = 1``), and
      when both rules are the mean (no robustness against Byzantine votes at all).

    Rule names are case-insensitive with ``-``/``_`` interchangeable: ``mean``,
    ``weighted_mean``, ``median``, ``coordinate_median``, ``trimmed_mean``, ``geometric_median``,
    ``rfa``, ``sign_majority``, ``krum``, ``multi_krum``, ``bulyan``; ``custom`` skips the checks.

    Returns
    -------
    int
        ``q̂_max``, the ``num_malicious_nodes`` to configure Multi-Krum or Bulyan with.
    """
    p, q, r, k = num_nodes, num_byzantine, redundancy, num_vote_groups
    _check_redundancy(r, rule="check_vote_group_rule")
    if not 0 <= q < p:
        raise ValueError(f"check_vote_group_rule requires 0 <= q < p (got p={p}, q={q})")
    n_votes = p // r if num_votes is None else num_votes
    if not 1 <= k <= n_votes:
        raise ValueError(f"check_vote_group_rule requires 1 <= k <= p̂ (got k={k}, p̂={n_votes})")
    inner_key = _rule_key(inner, role="inner")
    outer_key = _rule_key(outer, role="outer")
    q_hat = min(max_byzantine_groups(q, r), n_votes)
    size = n_votes // k
    where = f"p={p}, q={q}, r={r}, p̂={n_votes}, k={k}, q̂_max={q_hat}"

    for role, key, n, n_name in (("A0", inner_key, size, "p̂/k"), ("A1", outer_key, k, "k")):
        if key in _KRUM_RULES and n < 2 * q_hat + 3:
            raise ValueError(
                f"DETOX: Multi-Krum as {role} requires {n_name} >= 2q̂+3 (got {n_name}={n}; {where})"
            )
        if key in _BULYAN_RULES and n < 4 * q_hat + 3:
            raise ValueError(
                f"DETOX: Bulyan as {role} requires {n_name} >= 4q̂+3 (got {n_name}={n}; {where})"
            )
    if outer_key in _MAJORITY_RULES and k < 2 * q_hat + 1:
        logger.warning(
            "DETOX vote-group rule: %s as A1 needs k >= 2q̂_max+1 = %d vote groups to outvote every "
            "Byzantine vote, got k=%d (%s); a q̂_max event can break the aggregate",
            outer_key,
            2 * q_hat + 1,
            k,
            where,
        )
    if k < 5 and outer_key not in _MEAN_RULES:
        logger.warning(
            "DETOX: fewer than 5 vote groups (k=%d, %s); the robust A1 rule %s has few inputs",
            k,
            where,
            outer_key,
        )
    if inner_key in _MEAN_RULES and outer_key in _MEAN_RULES and q_hat > 0:
        logger.warning(
            "DETOX: A0 = A1 = mean gives no robustness against the up to %d Byzantine votes (%s)",
            q_hat,
            where,
        )
    return q_hat
