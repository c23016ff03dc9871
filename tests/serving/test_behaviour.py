"""Injected worker behaviour (spec approxifer.md §10 test hooks) and the master's screening."""

from __future__ import annotations

import numpy as np
import pytest

from flower_suite.serving.behaviour import InjectionPlan, WorkerBehaviour, screen_output


def test_corruptions() -> None:
    rng = np.random.default_rng(0)
    y = np.ones((1, 10))
    assert np.array_equal(WorkerBehaviour().corrupt(y, rng), y)
    assert np.array_equal(WorkerBehaviour(byzantine="sign_flip").corrupt(y, rng), -y)
    assert np.array_equal(WorkerBehaviour(byzantine="offset", offset=3.0).corrupt(y, rng), y + 3)
    noisy = WorkerBehaviour(byzantine="gaussian", sigma=2.0).corrupt(np.zeros((1, 20_000)), rng)
    assert noisy.std() == pytest.approx(2.0, rel=0.03)
    assert screen_output(WorkerBehaviour(byzantine="nan").corrupt(y, rng), (1, 10)) is not None
    assert screen_output(WorkerBehaviour(byzantine="wrong_shape").corrupt(y, rng), (1, 10))


def test_plan_draws_disjoint_seeded_workers_per_batch() -> None:
    plan = InjectionPlan(stragglers_per_batch=1, straggler_delay_s=0.5, byzantine_per_batch=2)
    draws = [plan.behaviours(b, 9) for b in range(50)]
    assert draws == [plan.behaviours(b, 9) for b in range(50)]  # deterministic in the seed
    for drawn in draws:
        delays = [w for w, b in drawn.items() if b.delay_s == 0.5]
        liars = [w for w, b in drawn.items() if b.byzantine == "gaussian"]
        assert len(delays) == 1 and len(liars) == 2 and not set(delays) & set(liars)
    assert len({tuple(sorted(d)) for d in draws}) > 10  # different workers across batches
    fixed = InjectionPlan(fixed={4: WorkerBehaviour(delay_s=1.0)}).behaviours(0, 9)
    assert fixed == {4: WorkerBehaviour(delay_s=1.0)}


def test_screen_output() -> None:
    assert screen_output(np.zeros((1, 10)), (1, 10)) is None
    assert "shape" in (screen_output(np.zeros((1, 9)), (1, 10)) or "")
    assert "NaN" in (screen_output(np.array([[np.inf] * 10]), (1, 10)) or "")
    assert "array" in (screen_output([0.0] * 10, (1, 10)) or "")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"delay_s": -1.0}, "delay_s"),
        ({"byzantine": "lies"}, "byzantine"),
        ({"sigma": float("nan")}, "sigma"),
    ],
)
def test_bad_behaviour_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        WorkerBehaviour(**kwargs)  # type: ignore[arg-type]


def test_plan_refuses_more_misbehaving_workers_than_exist() -> None:
    with pytest.raises(ValueError, match="only 3 workers"):
        InjectionPlan(stragglers_per_batch=2, byzantine_per_batch=2).behaviours(0, 3)
    with pytest.raises(ValueError, match="stragglers_per_batch"):
        InjectionPlan(stragglers_per_batch=-1)
