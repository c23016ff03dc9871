"""The replication baseline's assignment (spec approxifer.md §10); the baselines' serving
behaviour on Ray is tested in ``test_predictor.py`` (one Ray runtime per module)."""

from __future__ import annotations

import pytest

from flower_suite.serving.baselines import replication_assignment


@pytest.mark.parametrize(
    ("k", "n", "r"), [(8, 9, 2), (12, 13, 2), (8, 11, 2), (4, 12, 3), (3, 4, 1)]
)
def test_every_query_on_r_distinct_workers_and_load_balanced(k: int, n: int, r: int) -> None:
    assignment = replication_assignment(k, n, r)
    assert len(assignment) == n
    for q in range(k):
        holders = [i for i, queries in enumerate(assignment) if q in queries]
        assert len(holders) == r
    loads = [len(queries) for queries in assignment]
    assert max(loads) - min(loads) <= 1 and sum(loads) == r * k


def test_refuses_impossible_replication() -> None:
    with pytest.raises(ValueError, match="replicas"):
        replication_assignment(8, 9, 0)
    with pytest.raises(ValueError, match="replicas"):
        replication_assignment(8, 9, 10)
    with pytest.raises(ValueError, match="N"):
        replication_assignment(8, 7, 2)
