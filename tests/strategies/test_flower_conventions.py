"""Flower's conventions for the robust strategies that share Flower's names (Message API).

"Drop-in" means: ``Krum``, ``MultiKrum``, ``Bulyan``, ``FedMedian`` and ``FedTrimmedAvg`` take
``flwr.serverapp.strategy``'s arguments in Flower 1.42's order, and behave like Flower's when
called the way Flower's own unit tests call them: ``aggregate_train`` on a fresh instance (no
``configure_train``), with mock replies that carry content but no node id.

Each test reproduces the scenario of a Flower unit test (inputs, call sequence, expected value)
in our own structure and cites it. Where our semantics differ on purpose, the test asserts OUR
documented behaviour and the Flower test is listed in ``DEVIATIONS``. The legacy API
(``flwr.server.strategy``) is covered in ``test_flower_conventions_legacy.py``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any
from unittest.mock import Mock

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import strategy as flwr_strategy

from flower_suite.flower_compat import aggregate_metricrecords
from flower_suite.strategies import (
    Bulyan,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
    RobustFedAvg,
)

_SUITE = "flwr serverapp/strategy/"

# Flower test -> why our expected outcome differs (the test asserts ours).
DEVIATIONS: dict[str, str] = {
    f"{_SUITE}multikrum_test.py::test_aggregate_train_krum": (
        "Krum needs n >= 2f+3 replies (Blanchard et al.); with 3 replies and f=1 we skip the "
        "round (None, None) and record why, Flower clamps the neighbour count to "
        "max(1, n-f-2) and aggregates. Flower's value 0.7 is asserted with f=0, where both "
        "compute identical scores."
    ),
    f"{_SUITE}multikrum_test.py::test_aggregate_train_multikrum": (
        "same n >= 2f+3 precondition as Krum; Flower's 0.35 is asserted with f=0."
    ),
    f"{_SUITE}krum_test.py (removed upstream)": (
        "older copies of the two scenarios above; one calls Krum(num_nodes_to_keep=2), which "
        "Flower 1.42's own Krum rejects with TypeError, and so does ours."
    ),
    f"{_SUITE}bulyan_test.py (all 7 tests)": (
        "they unit-test Flower's module helper aggregate_n_closest_weights(ref, weights, "
        "beta), which is not part of our API; mirrored on our coordinate step "
        "flower_suite.aggregation.bulyan._window_mean, whose reference is always the "
        "coordinate-wise median of the selected set (as in the paper and in Flower's Bulyan "
        "strategy) and whose beta is derived (theta - 2f)."
    ),
    f"{_SUITE}bulyan_test.py::test_beta_equals_one": (
        "Flower's helper is given a reference (0.0) that is not the median; ours centres on "
        "the median (1.0), so the single closest value is 1.0, not -0.5."
    ),
    f"{_SUITE}bulyan_test.py::test_invalid_beta_too_large": (
        "beta > theta cannot be requested (beta = n - 4f); the strategy-level analogue, too "
        "few replies (n < 4f+3), skips the round without raising, as Flower's Bulyan does."
    ),
    "Bulyan strategy (no Flower Message-API test)": (
        "paper-faithful: theta iterated Krum selections on the shrinking pool; Flower's Bulyan "
        "selects the theta best one-shot Multi-Krum scores."
    ),
    "MultiKrum constructor default num_nodes_to_select": (
        "ours None = n - f (Blanchard et al.), Flower's 1 (i.e. Krum)."
    ),
    f"{_SUITE}strategy_utils_test.py::test_consistency_of_replies_with_different_keys": (
        "a reply whose arrays do not match is excluded (counted in 'rejected-replies') and "
        "the others are aggregated; Flower raises InconsistentMessageReplies."
    ),
    "all aggregate_train tests (arithmetic)": (
        "we aggregate updates (reply - reference) with exact float64 distances, Flower raw "
        "models with a Gram-matrix shortcut: same maths, results may differ in the last bit "
        "where the rule averages (exact equality is asserted only where it provably holds)."
    ),
}


def _reply(
    arrays: Sequence[np.ndarray],
    num_examples: float,
    metrics: dict[str, float] | None = None,
    names: Sequence[str] | None = None,
) -> Mock:
    """A train reply built like Flower's strategy tests build theirs: a Mock Message with
    content, no error, and no node id (``metadata.src_node_id`` is a bare Mock)."""
    values = [np.asarray(a) for a in arrays]
    msg = Mock(spec=Message)
    msg.content = RecordDict(
        {
            "arrays": ArrayRecord(dict(zip(names, (Array(v) for v in values), strict=True)))
            if names
            else ArrayRecord(values),
            "metrics": MetricRecord({"num-examples": num_examples, **(metrics or {})}),
        }
    )
    msg.has_error.return_value = False
    msg.has_content.return_value = True
    return msg


def _constant_replies(values: Sequence[float], num_examples: float = 5) -> list[Mock]:
    """One reply per value, each a single array of four copies of it (Flower's test models)."""
    return [_reply([np.full(4, v)], num_examples) for v in values]


def _only_array(record: ArrayRecord | None) -> np.ndarray:
    assert record is not None, "aggregate_train returned no arrays"
    assert list(record.keys()) == ["0"]  # keys of ArrayRecord([array]) kept
    return record["0"].numpy()


# -- constructor: Flower's parameter names, order and defaults ---------------------------------
_PAIRS = [
    (RobustFedAvg, flwr_strategy.FedAvg),
    (FedAvg, flwr_strategy.FedAvg),
    (FedProx, flwr_strategy.FedProx),
    (Krum, flwr_strategy.Krum),
    (MultiKrum, flwr_strategy.MultiKrum),
    (Bulyan, flwr_strategy.Bulyan),
    (FedMedian, flwr_strategy.FedMedian),
    (FedTrimmedAvg, flwr_strategy.FedTrimmedAvg),
]
_OUR_DEFAULTS = {("MultiKrum", "num_nodes_to_select"): None}  # see DEVIATIONS


@pytest.mark.parametrize(("ours", "flowers"), _PAIRS, ids=lambda c: c.__name__)
def test_signature_starts_with_flowers_parameters_in_flowers_order(
    ours: type, flowers: type
) -> None:
    """Mirrors the constructors of flwr.serverapp.strategy (Flower 1.42): same names, order,
    kinds and defaults; our extra parameters come after Flower's and have defaults."""
    # Prepare
    theirs = list(inspect.signature(flowers).parameters.values())
    mine = list(inspect.signature(ours).parameters.values())
    # Assert
    assert [p.name for p in mine[: len(theirs)]] == [p.name for p in theirs]
    for ours_p, theirs_p in zip(mine, theirs, strict=False):
        assert ours_p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, ours_p.name
        expected = _OUR_DEFAULTS.get((ours.__name__, ours_p.name), theirs_p.default)
        assert ours_p.default == expected, ours_p.name
    for extra in mine[len(theirs) :]:
        assert extra.kind in (extra.KEYWORD_ONLY, extra.POSITIONAL_OR_KEYWORD), extra.name
        assert extra.default is not inspect.Parameter.empty, extra.name


_POSITIONAL = [
    (Krum, (1.0, 0.5, 2, 2, 2, 1), {"num_malicious_nodes": 1, "weighted_by_key": "num-examples"}),
    (MultiKrum, (1.0, 0.5, 2, 2, 2, 1, 3), {"num_malicious_nodes": 1, "num_nodes_to_select": 3}),
    (Bulyan, (1.0, 0.5, 2, 2, 2, 1, "w"), {"num_malicious_nodes": 1, "weighted_by_key": "w"}),
    (
        FedMedian,
        (0.5, 0.25, 3, 4, 5, "w", "a", "c"),
        {"min_available_nodes": 5, "arrayrecord_key": "a"},
    ),
    (FedTrimmedAvg, (1.0, 1.0, 2, 2, 2, "w", "a", "c", None, None, 0.3), {"beta": 0.3}),
]


@pytest.mark.parametrize(
    ("ours", "args", "expected"), _POSITIONAL, ids=[case[0].__name__ for case in _POSITIONAL]
)
def test_positional_arguments_land_where_flower_puts_them(
    ours: type, args: tuple[Any, ...], expected: dict[str, Any]
) -> None:
    """Mirrors Flower 1.42's positional order: e.g. Krum(1.0, 0.5, 2, 2, 2, 1) means f=1 and
    keeps weighted_by_key="num-examples" (Flower's own class is the oracle)."""
    # Execute
    strategy = ours(*args)
    flowers = getattr(flwr_strategy, ours.__name__)(*args)
    # Assert
    for name, value in {"fraction_evaluate": args[1], **expected}.items():
        assert getattr(strategy, name) == value == getattr(flowers, name), name


def test_unknown_keyword_is_rejected_like_flower() -> None:
    """Mirrors flwr serverapp/strategy/krum_test.py (older copy), which built
    Krum(num_nodes_to_keep=2): Flower 1.42 raises TypeError, a drop-in must too."""
    with pytest.raises(TypeError):
        flwr_strategy.Krum(num_malicious_nodes=1, num_nodes_to_keep=2)
    with pytest.raises(TypeError):
        Krum(num_malicious_nodes=1, num_nodes_to_keep=2)


# -- Krum / MultiKrum: multikrum_test.py ------------------------------------------------------
_KRUM_CASES = [
    pytest.param(Krum, {}, [0.2, 0.7, 1.0], 0.7, id="test_aggregate_train_krum"),
    pytest.param(
        MultiKrum,
        {"num_nodes_to_select": 2},
        [0.2, 0.5, 1.0],
        0.35,
        id="test_aggregate_train_multikrum",
    ),
]


@pytest.mark.parametrize(("cls", "kwargs", "values", "expected"), _KRUM_CASES)
def test_krum_family_with_flowers_f1_inputs_skips_the_round(
    cls: type, kwargs: dict[str, int], values: list[float], expected: float
) -> None:
    """Mirrors flwr serverapp/strategy/multikrum_test.py (both tests) with f=1 and 3 replies:
    DEVIATION, n < 2f+3, so our fresh strategy skips the round instead of aggregating."""
    # Prepare
    strategy = cls(num_malicious_nodes=1, **kwargs)
    # Execute
    arrays, metrics = strategy.aggregate_train(1, _constant_replies(values))
    # Assert
    assert arrays is None and metrics is None
    assert strategy.records[1].skipped  # the reason is recorded, nothing raised


@pytest.mark.parametrize(("cls", "kwargs", "values", "expected"), _KRUM_CASES)
def test_krum_family_gives_flowers_value_on_a_fresh_instance(
    cls: type, kwargs: dict[str, int], values: list[float], expected: float
) -> None:
    """Mirrors flwr serverapp/strategy/multikrum_test.py (both tests) with f=0, where n >= 2f+3
    holds and the scores equal Flower's (one neighbour either way): Flower's exact value."""
    # Prepare
    strategy = cls(num_malicious_nodes=0, **kwargs)
    # Execute (no configure_train)
    arrays, _ = strategy.aggregate_train(server_round=1, replies=_constant_replies(values))
    # Assert
    actual = _only_array(arrays)
    assert actual.dtype == np.float64
    np.testing.assert_array_equal(actual, np.full(4, expected))


# -- FedMedian / FedTrimmedAvg: fedmedian_test.py, fedtrimmedavg_test.py ----------------------
_COORDINATE_CASES = [
    pytest.param(
        FedMedian,
        {},
        [[1.0, 0.2, 0.5, 1.0], [0.2, 0.5, 1.0, 0.2], [0.5, 1.0, 0.2, 0.5]],
        [5, 2, 9],
        [0.5, 0.5, 0.5, 0.5],
        id="fedmedian_test-test_aggregate_fit",
    ),
    pytest.param(
        FedMedian,
        {},
        [1.0, 3.0, 2.0],
        [1, 1, 1],
        2.0,
        id="fedmedian_test-test_aggregate_fit_with_scalar_weights",
    ),
    pytest.param(
        FedTrimmedAvg,
        {"beta": 0.25},
        [[0.5] * 4, [1.0, 0.2, 0.5, 1.0], [0.2, 0.5, 1.0, 0.2], [0.5, 1.0, 0.2, 0.5]],
        [1, 5, 2, 9],
        [0.5, 0.5, 0.5, 0.5],
        id="fedtrimmedavg_test-test_aggregate_fit",
    ),
    pytest.param(
        FedTrimmedAvg,
        {"beta": 0.25},
        [0.5, 1.0, 2.0, 100.0],
        [1, 1, 1, 1],
        1.5,
        id="fedtrimmedavg_test-test_aggregate_fit_with_scalar_weights",
    ),
]


@pytest.mark.parametrize(("cls", "kwargs", "rows", "weights", "expected"), _COORDINATE_CASES)
def test_coordinatewise_rules_match_flower_on_a_fresh_instance(
    cls: type, kwargs: dict[str, float], rows: list[Any], weights: list[int], expected: Any
) -> None:
    """Mirrors flwr serverapp/strategy/{fedmedian,fedtrimmedavg}_test.py (named in the id):
    aggregate_train without configure_train, exact values, 0-d arrays stay 0-d."""
    # Prepare
    strategy = cls(**kwargs)
    replies = [_reply([np.array(r)], w) for r, w in zip(rows, weights, strict=True)]
    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)
    # Assert
    actual = _only_array(arrays)
    assert actual.shape == np.shape(expected)
    np.testing.assert_array_equal(actual, np.array(expected))


def test_mismatched_reply_is_rejected_not_raised() -> None:
    """Mirrors the scenario of flwr serverapp/strategy/strategy_utils_test.py::
    test_consistency_of_replies_with_different_keys (array names differ) through FedMedian:
    DEVIATION, the odd reply is excluded, even when it arrives first."""
    for position in (0, 3):
        # Prepare
        replies = _constant_replies([0.2, 1.0, 0.5])
        replies.insert(position, _reply([np.full(4, 9.0)], 5, names=["b"]))
        # Execute
        arrays, metrics = FedMedian().aggregate_train(1, replies)
        # Assert
        np.testing.assert_array_equal(_only_array(arrays), np.full(4, 0.5))
        assert metrics is not None and metrics["rejected-replies"] == 1, position


# -- Bulyan: bulyan_test.py (Flower's helper) and the paper's algorithm -----------------------
_CLOSEST_CASES = [
    pytest.param([[1.0], [2.0], [0.5]], 2, [0.75], id="test_single_layer_single_value"),
    pytest.param(  # two layers, flattened: [1.1, 2.1 | 0.2, 1.2] ...
        [[1.1, 2.1, 0.2, 1.2], [0.9, 1.9, -0.1, 0.8], [5.0, 5.0, 10.0, 10.0]],
        2,
        [1.0, 2.0, 0.05, 1.0],
        id="test_multiple_layers",
    ),
    pytest.param([[1.0], [-0.5], [10.0]], 1, [1.0], id="test_beta_equals_one-DEVIATION"),
    pytest.param([[1.0, 2.0], [-1.0, 0.0], [3.0, 4.0]], 3, [1.0, 2.0], id="test_beta_equals_all"),
    pytest.param(
        [[1.1, 2.1, 2.9, 3.9], [10.0] * 4, [0.9, 1.9, 3.1, 4.1]],
        2,
        [1.0, 2.0, 3.0, 4.0],
        id="test_nontrivial_shapes",
    ),
    pytest.param([[5.0, 5.0]] * 3, 2, [5.0, 5.0], id="test_identical_weights"),
]


@pytest.mark.parametrize(("rows", "beta", "expected"), _CLOSEST_CASES)
def test_bulyan_coordinate_step_averages_beta_values_closest_to_median(
    rows: list[list[float]], beta: int, expected: list[float]
) -> None:
    """Mirrors flwr serverapp/strategy/bulyan_test.py (named in the id) on our coordinate
    step; the reference is the median of the rows (see DEVIATIONS)."""
    from flower_suite.aggregation.bulyan import _window_mean

    # Execute
    actual = _window_mean(torch.tensor(rows, dtype=torch.float64), beta, around_median=True)
    # Assert
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-12)


def test_bulyan_with_too_few_replies_skips_the_round() -> None:
    """Mirrors flwr serverapp/strategy/bulyan_test.py::test_invalid_beta_too_large at strategy
    level (2 replies, f=1 needs 7): no exception, no model, the reason recorded."""
    strategy = Bulyan(num_malicious_nodes=1)
    arrays, metrics = strategy.aggregate_train(
        1, [_reply([np.array([1.0])], 1), _reply([np.array([2.0])], 1)]
    )
    assert arrays is None and metrics is None
    assert strategy.records[1].skipped


def _bulyan_paper(models: np.ndarray, f: int) -> np.ndarray:
    """El Mhamdi et al. 2018, slowly: iterated Krum on the shrinking pool, then per coordinate
    the mean of the beta = theta - 2f selected values closest to their median."""
    pool, chosen = list(range(len(models))), []
    for _ in range(len(models) - 2 * f):
        k = min(max(1, len(pool) - f - 2), len(pool) - 1)
        scores = [
            sum(sorted(float(np.sum((models[i] - models[j]) ** 2)) for j in pool if j != i)[:k])
            for i in pool
        ]
        chosen.append(pool.pop(int(np.argmin(scores))))
    selected = models[chosen]
    beta = len(chosen) - 2 * f
    median = np.median(selected, axis=0)
    closest = np.argsort(np.abs(selected - median), axis=0, kind="stable")[:beta]
    return np.take_along_axis(selected, closest, axis=0).mean(axis=0)


def test_bulyan_is_the_papers_algorithm_on_a_fresh_instance() -> None:
    """No Flower Message-API test aggregates with Bulyan; DEVIATION (paper-faithful): 9 replies,
    one Byzantine, f=1, compared with a slow reference of the paper's algorithm."""
    # Prepare
    rng = np.random.default_rng(7)
    models = rng.normal(0.0, 1.0, size=(9, 6))
    models[4] += 40.0
    replies = [_reply([m], 10) for m in models]
    # Execute
    arrays, _ = Bulyan(num_malicious_nodes=1).aggregate_train(1, replies)
    # Assert
    np.testing.assert_allclose(_only_array(arrays), _bulyan_paper(models, 1), rtol=1e-12)


# -- training metrics: from the selected replies only ----------------------------------------
_VALUES = [1.0, 1.1, 1.25, 1.4, 50.0]  # 4 honest replies and one far outlier
_LOSSES = [0.1, 0.2, 0.3, 0.4, 9.0]
_EXAMPLES = [10, 20, 30, 40, 50]
# Krum scores with f=1 (n-f-2 = 2 neighbours, d=4): 0.29, 0.13, 0.18, 0.45, huge.
_SELECTION_CASES = [
    pytest.param(Krum, {}, [1], id="krum"),
    pytest.param(MultiKrum, {"num_nodes_to_select": 2}, [1, 2], id="multikrum-m2"),
    pytest.param(MultiKrum, {}, [0, 1, 2, 3], id="multikrum-default-m=n-f-DEVIATION"),
]


@pytest.mark.parametrize(("cls", "kwargs", "chosen"), _SELECTION_CASES)
def test_train_metrics_come_from_the_selected_replies_only(
    cls: type, kwargs: dict[str, int], chosen: list[int]
) -> None:
    """Mirrors Flower's MultiKrum.aggregate_train contract (multikrum_test.py scenarios):
    train_metrics_aggr_fn sees only the selected replies, so the outlier's loss is absent."""
    # Prepare
    seen: list[int] = []

    def spy(records: list[RecordDict], key: str) -> MetricRecord:
        seen.append(len(records))
        return aggregate_metricrecords(records, key)

    strategy = cls(num_malicious_nodes=1, train_metrics_aggr_fn=spy, **kwargs)
    replies = [
        _reply([np.full(4, v)], e, {"train-loss": loss})
        for v, loss, e in zip(_VALUES, _LOSSES, _EXAMPLES, strict=True)
    ]
    weights = np.array([_EXAMPLES[i] for i in chosen], dtype=float)
    # Execute
    arrays, metrics = strategy.aggregate_train(1, replies)
    # Assert
    assert seen == [len(chosen)]
    assert metrics is not None
    expected_loss = np.average([_LOSSES[i] for i in chosen], weights=weights)
    assert metrics["train-loss"] == pytest.approx(expected_loss, rel=1e-12)
    expected_model = np.average([_VALUES[i] for i in chosen], weights=weights)
    np.testing.assert_allclose(_only_array(arrays), np.full(4, expected_model), rtol=1e-12)
