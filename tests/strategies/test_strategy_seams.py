"""Regression tests for the measured failures where strategies meet client replies.

Each test names the failure it pins (issue "Trust at the seams"): a result, a logged exclusion
or a skipped round is the only acceptable outcome, never an exception out of a strategy, a
NaN model or a frozen one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, MetricRecord
from strategy_fixtures import SHAPES, configure, flat, global_arrays, reply, updates_around

from flower_suite.strategies import (
    CRFL,
    RFA,
    Bulyan,
    CenteredClipping,
    FedAvg,
    FedMedian,
    FedTrimmedAvg,
    GeometricMedian,
    Krum,
    MultiKrum,
    NormClipping,
    RobustFedAvg,
    WeakDP,
)

pytestmark = pytest.mark.usefixtures("task_identity")

D = 15
ROBUST_RULES: dict[str, Callable[[], RobustFedAvg]] = {
    "krum": lambda: Krum(num_malicious_nodes=1),
    "multikrum": lambda: MultiKrum(num_malicious_nodes=1),
    "bulyan": lambda: Bulyan(num_malicious_nodes=1),
    "fedmedian": FedMedian,
    "fedtrimmedavg": lambda: FedTrimmedAvg(beta=0.2),
    "geometric_median": GeometricMedian,
}
WEIGHTED = {
    "fedavg": FedAvg,
    "multikrum": lambda: MultiKrum(num_malicious_nodes=1),
    "rfa": RFA,
    "normclipping": lambda: NormClipping(max_norm=1.0),
    "weakdp": lambda: WeakDP(max_norm=1.0, noise_std=0.0),
    "centeredclipping": lambda: CenteredClipping(tau=1.0),
    "crfl": lambda: CRFL(rho=1e6, sigma=0.0),
}


def _honest(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [0.3 + rng.normal(0, 0.1, D) for _ in range(n)]


def _run(strategy: RobustFedAvg, deltas: list[np.ndarray], weights: list[float] | None = None):
    base = global_arrays()
    configure(strategy, base, [100 + i for i in range(len(deltas))])
    arrays, metrics = strategy.aggregate_train(1, updates_around(base, deltas, weights))
    step = None if arrays is None else flat(arrays) - flat(base)
    return step, metrics


def _within_spread(step: np.ndarray, honest: list[np.ndarray]) -> bool:
    """Distance to the honest mean at most the honest points' largest distance to it."""
    centre = np.mean(honest, axis=0)
    radius = max(np.linalg.norm(h - centre) for h in honest)
    return bool(np.linalg.norm(step - centre) <= radius)


@pytest.mark.parametrize("scale", [1e12, 1e38, float(np.finfo(np.float32).max)])
@pytest.mark.parametrize("name", sorted(ROBUST_RULES))
def test_one_huge_update_in_twenty_stays_within_the_honest_spread(name: str, scale: float) -> None:
    """Acceptance: one client in 20 sends an update of norm 1e38 (or float32 max)."""
    honest = _honest(19)
    direction = np.ones(D) / np.sqrt(D)
    step, _ = _run(ROBUST_RULES[name](), [*honest, direction * scale * 0.999])
    assert step is not None and np.isfinite(step).all()
    assert _within_spread(step, honest)


@pytest.mark.parametrize("name", sorted(WEIGHTED))
def test_two_claims_of_1e308_examples_give_a_finite_moving_model(name: str) -> None:
    """Measured: RFA returned a NaN model, MultiKrum raised, NormClipping / WeakDP /
    CenteredClipping / CRFL applied a zero update every round."""
    honest = _honest(8)
    step, _ = _run(WEIGHTED[name](), honest, [10] * 6 + [1e308, 1e308])
    assert step is not None and np.isfinite(step).all()
    assert np.linalg.norm(step) > 0.1  # honest updates have norm ~1.2: the model moves


def test_one_claim_of_1e12_examples_does_not_take_over_rfa() -> None:
    """Measured: one client claiming 1e12 examples took over RFA (and CRFL, below)."""
    honest = _honest(19)
    step, _ = _run(RFA(), [*honest, np.full(D, 50.0)], [10] * 19 + [1e12])
    assert step is not None and _within_spread(step, honest)


def test_one_claim_of_1e12_examples_gets_at_most_cap_times_the_median_weight_in_crfl() -> None:
    """CRFL's inner rule is the (non-robust) weighted mean: the claim is held to 10 x the
    median weight, 10/29 of the mean, instead of all of it."""
    honest = _honest(19)
    attacker = np.full(D, 50.0)
    step, _ = _run(CRFL(rho=1e6, sigma=0.0), [*honest, attacker], [10] * 19 + [1e12])
    expected = (np.sum(honest, axis=0) + 10 * attacker) / 29
    assert step is not None
    np.testing.assert_allclose(step, expected, rtol=1e-5)


def test_multikrum_with_too_few_valid_replies_skips_instead_of_raising() -> None:
    """Measured: MultiKrum(f=1, m=8) with 2 NaN replies out of 9 raised out of the round."""
    strategy = MultiKrum(num_malicious_nodes=1, num_nodes_to_select=8)
    deltas = _honest(9)
    deltas[0] = np.full(D, np.nan)
    deltas[1] = np.full(D, np.nan)
    step, metrics = _run(strategy, deltas)
    assert step is None and metrics is None
    assert "needs at least 8" in strategy.records[1].skipped
    assert strategy.min_replies() == 8


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: MultiKrum(num_nodes_to_select=0), "num_nodes_to_select"),
        (lambda: Krum(num_neighbours=0), "num_neighbours"),
        (lambda: Krum(num_malicious_nodes=-1), "num_malicious_nodes"),
        (lambda: Bulyan(num_malicious_nodes=1.5), "num_malicious_nodes"),
        (lambda: FedTrimmedAvg(beta=0.5), "beta"),
        (lambda: FedMedian(weight_cap=0.5), "weight_cap"),
        (
            lambda: NormClipping(aggregation="krum", aggregation_kwargs={"num_neighbours": 0}),
            "num_neighbours",
        ),
    ],
)
def test_out_of_range_parameters_fail_at_construction(factory, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        factory()


def test_krum_takes_flowers_positional_order() -> None:
    """Measured: ``Krum(1.0, 0.5, 2, 2, 2, 1)`` was accepted as f=0, weighted_by_key=1."""
    strategy = Krum(1.0, 0.5, 2, 2, 2, 1)
    assert strategy.num_malicious_nodes == 1 and strategy.weighted_by_key == "num-examples"
    assert MultiKrum(1.0, 0.5, 2, 2, 2, 1, 3).num_nodes_to_select == 3
    assert (
        FedTrimmedAvg(1.0, 0.5, 2, 2, 2, "num-examples", "arrays", "config", None, None, 0.3).beta
        == 0.3
    )
    with pytest.raises(TypeError, match="argument order"):
        Krum(1.0, 0.5, 2, 2, 2, 1, 7)  # 7 lands on weighted_by_key, as in Flower


def test_train_metrics_come_from_the_selected_replies(task_identity: None) -> None:
    """Measured: a rejected attacker's loss entered the round's metrics."""
    base = global_arrays()
    strategy = Krum(num_malicious_nodes=1)
    configure(strategy, base, list(range(100, 106)))
    replies = updates_around(base, [*_honest(5), np.full(D, 40.0)])
    replies[-1].content["metrics"] = MetricRecord({"num-examples": 10, "train-loss": 99.0})
    _, metrics = strategy.aggregate_train(1, replies)
    assert metrics is not None and metrics["train-loss"] == 1.0
    assert metrics["selected-replies"] == 1


def test_fedavg_excludes_a_nan_reply_instead_of_ending_with_a_nan_model() -> None:
    """Measured: plain FedAvg from our configs ended a run with a NaN model (exit 0)."""
    honest = _honest(4)
    step, metrics = _run(FedAvg(), [*honest, np.full(D, np.nan)])
    assert step is not None
    np.testing.assert_allclose(step, np.mean(honest, axis=0), atol=1e-5)
    assert metrics is not None and metrics["rejected-replies"] == 1


def test_arrayrecord_key_is_honoured(task_identity: None) -> None:
    base = global_arrays()
    strategy = FedMedian(arrayrecord_key="weights")
    configure(strategy, base, [1, 2, 3])
    replies = []
    for node in (1, 2, 3):
        msg = reply({k: base[k].numpy() + 1 for k in SHAPES}, node_id=node)
        msg.content["weights"] = msg.content.array_records["arrays"]
        del msg.content["arrays"]
        replies.append(msg)
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    np.testing.assert_allclose(flat(arrays) - flat(base), 1.0, atol=1e-6)


@pytest.mark.parametrize("name", sorted(ROBUST_RULES))
def test_batchnorm_counter_keeps_shape_and_round_two_is_accepted(
    task_identity: None, name: str
) -> None:
    """Measured: the 0-d ``num_batches_tracked`` came back as shape (1,), so every reply of
    round 2 was rejected (accuracy frozen) or the runner crashed loading the model."""
    strategy = ROBUST_RULES[name]()
    model = ArrayRecord(
        {"w": Array(np.zeros(4, np.float32)), "bn.num_batches_tracked": Array(np.array(0))}
    )
    rng = np.random.default_rng(1)
    for server_round in (1, 2):
        configure(strategy, model, list(range(1, 8)))
        replies = []
        for node in range(1, 8):
            arrays = {
                "w": model["w"].numpy() + rng.normal(0, 0.1, 4).astype(np.float32),
                "bn.num_batches_tracked": np.asarray(model["bn.num_batches_tracked"].numpy() + 5),
            }
            replies.append(reply(arrays, node_id=node))
        new, _ = strategy.aggregate_train(server_round, replies)
        assert new is not None, strategy.records[server_round]
        assert strategy.records[server_round].rejected == []
        assert new["bn.num_batches_tracked"].shape == ()
        model = new
    assert int(model["bn.num_batches_tracked"].numpy()) == 10


def test_client_metrics_are_averaged_with_the_screened_weights() -> None:
    """Two claims of 1e308 examples made Flower's weighted metric average 0 / inf (every
    weight factor 0, train-loss reported as 0.0); a NaN metric is dropped, not reported."""
    honest = _honest(8)
    _, metrics = _run(FedMedian(), honest, [10] * 6 + [1e308, 1e308])
    assert metrics is not None and metrics["train-loss"] == pytest.approx(1.0)
    strategy = FedMedian()
    base = global_arrays()
    configure(strategy, base, [1, 2, 3])
    replies = [reply({k: base[k].numpy() for k in SHAPES}, node_id=n) for n in (1, 2, 3)]
    replies[0].content["metrics"] = MetricRecord({"num-examples": 10, "train-loss": np.nan})
    _, metrics = strategy.aggregate_train(1, replies)
    assert metrics is not None and "train-loss" not in metrics
