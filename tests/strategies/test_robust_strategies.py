"""Robust Message-API strategies: rule consistency, bad replies, records, registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from strategy_fixtures import configure, flat, global_arrays, reply, updates_around

from flower_suite.aggregation import (
    bulyan,
    coordinate_median,
    geometric_median,
    krum,
    multi_krum,
    trimmed_mean,
)
from flower_suite.strategies import (
    STRATEGIES,
    Bulyan,
    CenteredClipping,
    FedMedian,
    FedTrimmedAvg,
    GeometricMedian,
    Krum,
    MultiKrum,
    SignSGD,
)

D = 15  # 4 * 3 + 3 parameters
NODES = list(range(100, 120))


def _deltas(n_honest: int, n_byzantine: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    honest = [rng.normal(0, 0.01, D) for _ in range(n_honest)]
    byzantine = [np.full(D, 50.0) + rng.normal(0, 0.01, D) for _ in range(n_byzantine)]
    return honest + byzantine


CASES = [
    (Krum(num_malicious_nodes=2), lambda u, w: krum(u, w, num_malicious_nodes=2)),
    (MultiKrum(num_malicious_nodes=2), lambda u, w: multi_krum(u, w, num_malicious_nodes=2)),
    (Bulyan(num_malicious_nodes=2), lambda u, w: bulyan(u, w, num_malicious_nodes=2)),
    (FedMedian(), coordinate_median),
    (FedTrimmedAvg(beta=0.2), lambda u, w: trimmed_mean(u, w, beta=0.2)),
    (GeometricMedian(), geometric_median),
]


@pytest.mark.parametrize(("strategy", "reference"), CASES, ids=lambda c: type(c).__name__)
def test_strategy_equals_rule_on_updates_and_resists_outliers(
    task_identity: None, strategy, reference
) -> None:
    """New global = old global + rule(updates); two far-away replies do not move it far."""
    # Prepare
    base = global_arrays()
    deltas = _deltas(9, 2)
    configure(strategy, base, list(range(100, 111)))
    replies = updates_around(base, deltas)
    # Execute
    arrays, metrics = strategy.aggregate_train(1, replies)
    # Assert
    updates = torch.from_numpy(np.stack([flat(r.content["arrays"]) for r in replies]) - flat(base))
    expected = (
        flat(base)
        + reference(updates, torch.full((11,), 10.0, dtype=torch.float64)).aggregate.numpy()
    )
    np.testing.assert_allclose(flat(arrays), expected, rtol=1e-6, atol=1e-6)
    assert np.abs(flat(arrays) - flat(base)).max() < 0.1  # the +50 attackers were outvoted
    assert metrics["rejected-replies"] == 0
    assert list(arrays.keys()) == ["w", "b"] and arrays["w"].shape == (4, 3)


def test_fedavg_is_dragged_by_the_same_outliers(task_identity: None) -> None:
    """The control: plain FedAvg moves by ~9 (= 2/11 of 50)."""
    from flwr.serverapp.strategy import FedAvg

    base = global_arrays()
    replies = updates_around(base, _deltas(9, 2))
    arrays, _ = FedAvg().aggregate_train(1, replies)
    assert np.abs(flat(arrays) - flat(base)).mean() > 5


def test_krum_records_selected_node_ids(task_identity: None) -> None:
    """Multi-Krum selects the 9 honest node ids (100..108), recorded per round."""
    strategy = MultiKrum(num_malicious_nodes=2)
    base = global_arrays()
    configure(strategy, base, list(range(100, 111)))
    strategy.aggregate_train(1, updates_around(base, _deltas(9, 2)))
    assert sorted(strategy.records[1].selected) == list(range(100, 109))


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (lambda a: {**a, "w": np.full((4, 3), np.nan, np.float32)}, "NaN or Inf"),
        (lambda a: {**a, "b": np.full(3, np.inf, np.float32)}, "NaN or Inf"),
        (lambda a: {**a, "w": np.zeros((3, 4), np.float32)}, "shape"),
        (lambda a: {**a, "w": a["w"].astype(np.float64)}, "dtype"),
        (lambda a: {"w": a["w"]}, "missing"),
        (lambda a: {**a, "extra": np.zeros(2, np.float32)}, "extra"),
    ],
)
def test_bad_reply_is_excluded_not_aggregated(task_identity: None, corrupt, reason: str) -> None:
    """A malformed reply is dropped with a reason; the result equals aggregating the rest."""
    base = global_arrays()
    good = updates_around(base, _deltas(6, 0))
    arrays = {k: good[0].content["arrays"][k].numpy() for k in ("w", "b")}
    bad = reply(corrupt(arrays), node_id=999)
    strategy = FedMedian()
    configure(strategy, base, NODES)
    with_bad, metrics = strategy.aggregate_train(1, [*good, bad])
    reference = FedMedian()
    configure(reference, base, NODES)
    clean, _ = reference.aggregate_train(1, good)
    np.testing.assert_array_equal(flat(with_bad), flat(clean))
    assert metrics["rejected-replies"] == 1
    ((node, why),) = strategy.records[1].rejected
    assert node == 999 and reason in why


def test_error_replies_are_counted(task_identity: None) -> None:
    """Replies carrying an error are not decoded and count as rejected."""
    base = global_arrays()
    replies = [*updates_around(base, _deltas(5, 0)), reply({}, node_id=7, error=True)]
    strategy = FedMedian()
    configure(strategy, base, NODES)
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and metrics["rejected-replies"] == 1


def test_too_few_replies_skip_the_round(task_identity: None) -> None:
    """Bulyan with f=2 needs 11 replies: with 10 the round is skipped, model unchanged."""
    strategy = Bulyan(num_malicious_nodes=2)
    base = global_arrays()
    configure(strategy, base, NODES)
    arrays, metrics = strategy.aggregate_train(3, updates_around(base, _deltas(10, 0)))
    assert arrays is None and metrics is None
    assert "needs at least 11" in strategy.records[3].skipped


def test_replies_are_not_mutated(task_identity: None) -> None:
    """Aggregation leaves every reply's arrays bitwise unchanged."""
    base = global_arrays()
    replies = updates_around(base, _deltas(9, 2))
    before = [flat(r.content["arrays"]).copy() for r in replies]
    strategy = Bulyan(num_malicious_nodes=2)
    configure(strategy, base, NODES)
    strategy.aggregate_train(1, replies)
    for r, b in zip(replies, before, strict=True):
        np.testing.assert_array_equal(flat(r.content["arrays"]), b)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: Krum(num_malicious_nodes=-1), "num_malicious_nodes"),
        (lambda: FedTrimmedAvg(beta=0.5), "beta"),
        (lambda: Bulyan(variant="fast"), "variant"),
        (lambda: GeometricMedian(nu=0), "nu"),
        (lambda: SignSGD(server_learning_rate=0), "server_learning_rate"),
        (lambda: CenteredClipping(tau=0), "tau"),
    ],
)
def test_bad_parameters_raise_at_construction(factory, message: str) -> None:
    """Out-of-range parameters are programmer errors: raised in __init__."""
    with pytest.raises(ValueError, match=message):
        factory()


def test_sign_sgd_moves_by_the_server_learning_rate(task_identity: None) -> None:
    """7 positive updates and 3 negative ones: every coordinate moves by +lr."""
    base = global_arrays()
    deltas = [np.full(D, 0.3)] * 7 + [np.full(D, -5.0)] * 3
    strategy = SignSGD(server_learning_rate=0.01)
    configure(strategy, base, NODES)
    arrays, _ = strategy.aggregate_train(1, updates_around(base, deltas))
    np.testing.assert_allclose(flat(arrays) - flat(base), 0.01, rtol=1e-4)


def test_registered_for_configs() -> None:
    """Every strategy is reachable by name, and config keywords are validated."""
    for name in (
        "krum",
        "multikrum",
        "bulyan",
        "fedmedian",
        "fedtrimmedavg",
        "rfa",
        "signsgd",
        "centeredclipping",
        "geometric_median",
        "detox",
    ):
        assert name in STRATEGIES, name
    STRATEGIES.check_kwargs("krum", {"num_malicious_nodes": 1, "fraction_train": 0.5}, field="s")
    with pytest.raises(ValueError, match=r"^strategy\.num_malicious"):
        STRATEGIES.check_kwargs("fedmedian", {"num_malicious": 1}, field="strategy")


def test_zero_weight_reply_is_excluded(task_identity: None) -> None:
    """num-examples = 0 cannot weigh an average: that reply is excluded with a reason."""
    base = global_arrays()
    replies = updates_around(base, _deltas(5, 0), weights=[10, 10, 10, 10, 0])
    strategy = MultiKrum(num_malicious_nodes=0)
    configure(strategy, base, NODES)
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and metrics["rejected-replies"] == 1
    assert "expected a finite value > 0" in strategy.records[1].rejected[0][1]


def test_malformed_client_metrics_do_not_cost_the_round(task_identity: None) -> None:
    """A list metric of another length breaks Flower's metric averaging, not our round."""
    from flwr.app import MetricRecord

    base = global_arrays()
    replies = updates_around(base, _deltas(5, 0))
    replies[0].content["metrics"] = MetricRecord({"num-examples": 10, "loss": [1.0, 2.0]})
    replies[1].content["metrics"] = MetricRecord({"num-examples": 10, "loss": [1.0]})
    strategy = FedMedian()
    configure(strategy, base, NODES)
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None
    assert metrics["rejected-replies"] == 0
