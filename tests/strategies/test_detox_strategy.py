"""The DETOX strategy: server-assigned data partitions, votes, HIER-AGGR."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from strategy_fixtures import configure, flat, global_arrays, reply

from flower_suite.aggregation import coordinate_median
from flower_suite.strategies import DETOX

NODES = list(range(100, 109))  # p = 9 nodes, r = 3 -> 3 node groups
D = 15


def _group_members(messages) -> dict[int, list[int]]:
    members: dict[int, list[int]] = {}
    for msg in messages:
        members.setdefault(int(msg.content["config"]["data-partition"]), []).append(
            msg.metadata.dst_node_id
        )
    return {group: sorted(nodes) for group, nodes in members.items()}


def _replies(base, strategy, honest: dict[int, np.ndarray], byzantine: dict[int, np.ndarray]):
    """Each node returns its group's honest update unless listed as Byzantine."""
    out = []
    for node in NODES:
        delta = byzantine.get(node, honest[strategy.groups[node]])
        arrays = {
            "w": base["w"].numpy() + delta[:12].reshape(4, 3).astype(np.float32),
            "b": base["b"].numpy() + delta[12:].astype(np.float32),
        }
        out.append(reply(arrays, node_id=node))
    return out


def test_each_node_group_trains_on_one_partition(task_identity: None) -> None:
    """Every node is told its group's data partition; groups have r = 3 members."""
    strategy = DETOX(redundancy=3, num_vote_groups=3, min_available_nodes=9)
    messages = configure(strategy, global_arrays(), NODES)
    members = _group_members(messages)
    assert sorted(members) == [0, 1, 2]
    assert all(len(m) == 3 for m in members.values())
    assert sorted(n for m in members.values() for n in m) == NODES
    # The grouping is fixed for the run.
    again = _group_members(configure(strategy, global_arrays(), NODES))
    assert again == members


def test_byzantine_member_is_outvoted(task_identity: None) -> None:
    """One Byzantine member per group loses the vote; the result is the honest median."""
    base = global_arrays()
    strategy = DETOX(redundancy=3, num_vote_groups=3, inner="mean", outer="median")
    configure(strategy, base, NODES)
    rng = np.random.default_rng(0)
    honest = {g: rng.normal(0, 0.01, D) for g in range(3)}
    first_members = {g: min(n for n, gg in strategy.groups.items() if gg == g) for g in range(3)}
    byzantine = {node: np.full(D, 1e3) for node in first_members.values()}
    arrays, metrics = strategy.aggregate_train(1, _replies(base, strategy, honest, byzantine))
    # The honest updates went through float32 arrays: compare against those.
    votes = np.stack([honest[g] for g in range(3)]).astype(np.float32)
    expected = coordinate_median(torch.from_numpy(votes)).aggregate.numpy()
    np.testing.assert_allclose(flat(arrays) - flat(base), expected, atol=1e-6)
    assert not set(strategy.records[1].selected) & set(byzantine)
    assert metrics["rejected-replies"] == 0


def test_missing_members_leave_a_zero_vote(task_identity: None) -> None:
    """A group with only 1 of 3 members replying has no majority: it votes zero."""
    base = global_arrays()
    strategy = DETOX(redundancy=3, num_vote_groups=1, inner="mean", outer="mean")
    configure(strategy, base, NODES)
    honest = {g: np.full(D, 0.3) for g in range(3)}
    replies = _replies(base, strategy, honest, {})
    lonely_group = strategy.groups[NODES[0]]
    dropped = [n for n, g in strategy.groups.items() if g == lonely_group][1:]
    replies = [r for r in replies if r.metadata.src_node_id not in dropped]
    arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(flat(arrays) - flat(base), 0.2, rtol=1e-5)  # mean(.3,.3,0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"redundancy": 2}, "odd"),
        ({"on_no_majority": "ignore"}, "on_no_majority"),
        ({"inner": "median", "inner_params": {"beta": 0.1}}, "beta"),
    ],
)
def test_bad_configuration_raises(kwargs: dict, message: str) -> None:
    """Invalid DETOX settings are refused at construction."""
    with pytest.raises(ValueError, match=message):
        DETOX(**kwargs)


def test_nodes_must_fill_groups(task_identity: None) -> None:
    """10 nodes cannot form groups of 3: a clear error at the first round."""
    strategy = DETOX(redundancy=3)
    with pytest.raises(ValueError, match="divide"):
        configure(strategy, global_arrays(), list(range(10)))


def test_krum_family_rules_are_sized_with_q_hat() -> None:
    """With q = 5 and r = 3, inner Bulyan gets f = q_hat_max = 2 (not 5)."""
    strategy = DETOX(redundancy=3, num_malicious_nodes=5, inner="bulyan", outer="mean")
    assert strategy.q_hat_max == 2
    assert strategy.inner.keywords["num_malicious_nodes"] == 2
