"""Group assignment and group-size choice for group-wise secure aggregation (core, no Flower)."""

from __future__ import annotations

import pytest

from flower_suite.aggregation.requirements import min_inputs_tolerating
from flower_suite.secagg.groups import (
    assign_groups,
    choose_group_size,
    max_corrupted_groups,
    num_groups,
    tolerated_byzantine,
)


@pytest.mark.parametrize("n", [3, 4, 5, 7, 12, 13, 29, 100])
@pytest.mark.parametrize("g", [3, 4, 5, 10])
def test_groups_partition_the_sample_with_sizes_g_or_g_plus_one(n: int, g: int) -> None:
    nodes = [1000 + 7 * i for i in range(n)]
    if n < g:
        with pytest.raises(ValueError, match="cannot form a group"):
            assign_groups(nodes, g, seed=0, server_round=1)
        return
    groups = assign_groups(nodes, g, seed=0, server_round=1)
    assert len(groups) == n // g == num_groups(n, g)
    assert sorted(node for group in groups for node in group) == nodes  # each node once
    sizes = [len(group) for group in groups]
    assert min(sizes) >= g and max(sizes) - min(sizes) <= 1 and max(sizes) < 2 * g
    for group in groups:
        assert group == sorted(group)
    # the sampling order plays no part
    assert assign_groups(nodes[::-1], g, seed=0, server_round=1) == groups


def test_assignment_is_fixed_by_seed_and_round_and_changes_between_rounds() -> None:
    nodes = list(range(40))
    first = assign_groups(nodes, 4, seed=3, server_round=1)
    assert assign_groups(nodes, 4, seed=3, server_round=1) == first
    assert assign_groups(nodes, 4, seed=3, server_round=2) != first
    assert assign_groups(nodes, 4, seed=4, server_round=1) != first
    # the groups are not the sample cut in order (a client cannot pick its neighbours)
    assert first != [nodes[i : i + 4] for i in range(0, 40, 4)]


def test_bad_group_sizes_and_duplicate_nodes_are_refused() -> None:
    with pytest.raises(ValueError, match=">= 3"):
        assign_groups([1, 2, 3, 4], 2, seed=0, server_round=1)
    with pytest.raises(ValueError, match="integer"):
        assign_groups([1, 2, 3, 4], 3.0, seed=0, server_round=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="distinct"):
        assign_groups([1, 2, 2, 4], 3, seed=0, server_round=1)


def test_byzantine_clients_corrupt_at_most_f_groups_whatever_the_assignment() -> None:
    byzantine = {0, 1, 2}
    for seed in range(50):
        groups = assign_groups(list(range(30)), 3, seed=seed, server_round=1)
        corrupted = sum(1 for group in groups if byzantine & set(group))
        assert corrupted <= max_corrupted_groups(len(byzantine), len(groups)) == 3


@pytest.mark.parametrize(
    ("rule", "f", "needed"),
    [("median", 2, 5), ("trimmed_mean", 2, 5), ("geometric_median", 0, 1), ("krum", 1, 5),
     ("multi-krum", 2, 7), ("bulyan", 1, 7), ("mean", 0, 1)],
)  # fmt: skip
def test_min_inputs_tolerating_is_each_rules_breakdown(rule: str, f: int, needed: int) -> None:
    assert min_inputs_tolerating(rule, f) == needed


def test_the_mean_tolerates_no_byzantine_client() -> None:
    with pytest.raises(ValueError, match="no Byzantine tolerance"):
        min_inputs_tolerating("mean", 1)
    assert tolerated_byzantine(40, 4, rule="mean") == 0


def test_choose_group_size_is_the_largest_g_that_keeps_the_rule_robust() -> None:
    # 40 clients, 4 Byzantine, median: 9 group means needed -> g = 40 // 9 = 4
    assert choose_group_size(40, 4, rule="median") == 4
    assert num_groups(40, 4) >= min_inputs_tolerating("median", 4)
    assert num_groups(40, 5) < min_inputs_tolerating("median", 4)  # g + 1 would break it
    assert choose_group_size(100, 2, rule="krum") == 14  # 7 means of >= 14 clients
    assert choose_group_size(100, 0, rule="median") == 100  # no attacker: one group
    with pytest.raises(ValueError, match="at most 3, below the target size 5"):
        choose_group_size(40, 4, rule="krum", min_group_size=5)


def test_tolerated_byzantine_inverts_choose_group_size() -> None:
    for n in (20, 40, 100):
        for f in range(4):
            for rule in ("median", "krum", "bulyan"):
                try:
                    g = choose_group_size(n, f, rule=rule)
                except ValueError:
                    continue
                assert tolerated_byzantine(n, g, rule=rule) >= f
    assert tolerated_byzantine(8, 4, rule="krum") == -1  # 2 means: fewer than Krum's 3
    assert tolerated_byzantine(12, 4, rule="krum") == 0
