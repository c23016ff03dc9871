"""DETOX set-up: node groups, filtering statistics and the vote-group rule (dissertation ch. 7).

The configuration side of DETOX (robust-aggregation spec sections 2.2, 2.3, 6.4, 6.5), kept
apart from the per-round aggregation in :mod:`flower_suite.aggregation.detox`, which re-exports
every public name here:

- :func:`make_node_groups` draws the once-per-run partition of the ``p`` nodes into node groups
  of odd size ``r`` (Algorithm 6);
- :func:`byzantine_majority_groups`, :func:`expected_byzantine_groups` and
  :func:`max_byzantine_groups` count the node groups the Byzantine nodes control (``q̂``:
  observed, expected over random groups, worst case);
- :func:`check_vote_group_rule` validates a configuration once against the vote-group rule.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Sequence

import torch

__all__ = [
    "byzantine_majority_groups",
    "check_vote_group_rule",
    "expected_byzantine_groups",
    "make_node_groups",
    "max_byzantine_groups",
]

# The name of the module these functions were split from: log filters and the tests select
# DETOX's configuration warnings by it.
logger = logging.getLogger("flower_suite.aggregation.detox")


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
