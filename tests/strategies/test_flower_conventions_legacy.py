"""Flower's conventions under the legacy strategy API (``flwr.server.strategy``).

Flower's legacy unit tests build a strategy with ``initial_parameters`` and call
``aggregate_fit(server_round, results, failures)`` directly (no ``configure_fit``), with
``(ClientProxy, FitRes)`` results. Our legacy entry point is the adapter
``LegacyRobust(<Message-API strategy>, **legacy_fedavg_kwargs)``; each test below calls it the
way the cited Flower test calls Flower's class. Message-API conventions are in
``test_flower_conventions.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from unittest.mock import MagicMock, Mock

import numpy as np
import pytest
from flwr.common import (
    Code,
    FitRes,
    Parameters,
    Scalar,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_proxy import ClientProxy

from flower_suite.strategies import Bulyan, FedMedian, Krum, LegacyRobust, MultiKrum

_SUITE = "flwr server/strategy/"

# Flower test -> why it cannot run against us with only the import changed, or why our
# expected outcome differs (the test asserts ours).
DEVIATIONS: dict[str, str] = {
    "all legacy tests (API shape)": (
        "our Krum/MultiKrum/Bulyan/FedMedian are Message-API strategies; the legacy strategy is "
        "LegacyRobust(Krum(num_malicious_nodes=f), **legacy FedAvg kwargs). Legacy names map "
        "num_malicious_clients -> num_malicious_nodes, num_clients_to_keep -> "
        "num_nodes_to_select (MultiKrum); Bulyan's to_keep (kwargs of Flower's first rule) has "
        "no counterpart. So no legacy test passes with only the import changed; all are "
        "mirrored with the one-line wrapper."
    ),
    f"{_SUITE}krum_test.py::test_aggregate_fit": (
        "n >= 2f+3: 3 results with f=1 skip the round (None, {}); Flower's 0.7 is asserted "
        "with f=0, where both compute the same scores."
    ),
    f"{_SUITE}multikrum_test.py::test_aggregate_fit": (
        "same precondition (MultiKrum, f=1, 3 results); Flower's 0.35 is asserted with f=0."
    ),
    f"{_SUITE}bulyan_test.py::test_aggregate_fit": (
        "same value (f=0: the mean of all six), but we aggregate updates around a reference, "
        "so equality is asserted to 2 float32 ulps (bit-exact only when the reference is the "
        "replies' median; centring on initial_parameters is 1 ulp off)."
    ),
    "legacy fit metrics (no Flower test)": (
        "fit_metrics_aggregation_fn receives the selected results only, as our Message API and "
        "Flower's Message-API MultiKrum/Bulyan do; Flower's legacy Krum passes all results."
    ),
}

_OK = Status(code=Code.OK, message="Success")


def _parameters(value: float) -> Parameters:
    """Flower's legacy test models: one float32 array of four copies of ``value``."""
    return ndarrays_to_parameters([np.full(4, value, dtype=np.float32)])


def _results(
    values: Sequence[float],
    num_examples: Sequence[int] | None = None,
    metrics: Sequence[dict[str, Scalar]] | None = None,
    anonymous: bool = False,
) -> list[tuple[ClientProxy, FitRes]]:
    """``(proxy, FitRes)`` pairs; proxies have cids "0", "1", ... or are bare MagicMocks."""
    out = []
    for i, value in enumerate(values):
        proxy = MagicMock() if anonymous else Mock(spec=ClientProxy, cid=str(i))
        res = FitRes(
            status=_OK,
            parameters=_parameters(value),
            num_examples=num_examples[i] if num_examples else 5,
            metrics=dict(metrics[i]) if metrics else {},
        )
        out.append((proxy, res))
    return out


def _legacy(strategy: Any, **kwargs: Any) -> LegacyRobust:
    """The wrapped strategy, with Flower's legacy-test initial parameters (0.1 everywhere)."""
    return LegacyRobust(strategy, initial_parameters=_parameters(0.1), **kwargs)


def _single_array(parameters: Parameters | None) -> np.ndarray:
    assert parameters is not None, "aggregate_fit returned no parameters"
    arrays = parameters_to_ndarrays(parameters)
    assert len(arrays) == 1
    return arrays[0]


# -- sampling: krum_test.py and fedmedian_test.py ---------------------------------------------
@pytest.mark.parametrize("cls", [Krum, FedMedian])
@pytest.mark.parametrize("available", [20, 19, 10, 9])
def test_num_fit_clients_samples_everyone_by_default(cls: type, available: int) -> None:
    """Mirrors flwr server/strategy/{krum,fedmedian}_test.py::test_<name>_num_fit_clients_
    {20,19,10}_available and _minimum: default fraction_fit=1.0 samples all available."""
    # Execute
    sample_size, _ = LegacyRobust(cls()).num_fit_clients(num_available_clients=available)
    # Assert
    assert sample_size == available


@pytest.mark.parametrize("cls", [Krum, FedMedian])
@pytest.mark.parametrize("available", [40, 39, 20, 19])
def test_num_evaluation_clients_respects_the_minimum(cls: type, available: int) -> None:
    """Mirrors flwr server/strategy/{krum,fedmedian}_test.py::test_<name>_num_evaluation_
    clients_{40,39,20}_available and _minimum: fraction_evaluate=0.05 gives 2 clients."""
    # Execute
    sample_size, _ = LegacyRobust(cls(), fraction_evaluate=0.05).num_evaluation_clients(
        num_available_clients=available
    )
    # Assert
    assert sample_size == 2


# -- aggregate_fit without configure_fit -------------------------------------------------------
def test_fedmedian_aggregate_fit_matches_flower() -> None:
    """Mirrors flwr server/strategy/fedmedian_test.py::test_aggregate_fit: results 0.2, 1.0,
    0.5 (float32) give exactly 0.5, without configure_fit."""
    # Execute
    parameters, _ = _legacy(FedMedian()).aggregate_fit(
        server_round=1, results=_results([0.2, 1.0, 0.5]), failures=[]
    )
    # Assert
    actual = _single_array(parameters)
    assert actual.dtype == np.float32
    np.testing.assert_array_equal(actual, np.full(4, 0.5, dtype=np.float32))


_KRUM_CASES = [
    pytest.param(Krum, {}, [0.2, 0.7, 1.0], 0.7, id="krum_test-test_aggregate_fit"),
    pytest.param(
        MultiKrum,
        {"num_nodes_to_select": 2},
        [0.2, 0.5, 1.0],
        0.35,
        id="multikrum_test-test_aggregate_fit",
    ),
]


@pytest.mark.parametrize(("cls", "kwargs", "values", "expected"), _KRUM_CASES)
def test_krum_family_with_flowers_f1_inputs_skips_the_round(
    cls: type, kwargs: dict[str, int], values: list[float], expected: float
) -> None:
    """Mirrors flwr server/strategy/{krum,multikrum}_test.py::test_aggregate_fit with f=1 and
    3 results: DEVIATION (n < 2f+3), the round is skipped without raising."""
    # Prepare
    legacy = _legacy(cls(num_malicious_nodes=1, **kwargs))
    # Execute
    parameters, metrics = legacy.aggregate_fit(1, _results(values), [])
    # Assert
    assert parameters is None and metrics == {}
    assert legacy.records[1].skipped


@pytest.mark.parametrize(("cls", "kwargs", "values", "expected"), _KRUM_CASES)
def test_krum_family_aggregate_fit_gives_flowers_value(
    cls: type, kwargs: dict[str, int], values: list[float], expected: float
) -> None:
    """Mirrors flwr server/strategy/{krum,multikrum}_test.py::test_aggregate_fit with f=0
    (same scores as Flower's f=1): Flower's exact float32 value, without configure_fit."""
    # Execute
    parameters, _ = _legacy(cls(num_malicious_nodes=0, **kwargs)).aggregate_fit(
        server_round=1, results=_results(values), failures=[]
    )
    # Assert
    actual = _single_array(parameters)
    assert actual.dtype == np.float32
    np.testing.assert_array_equal(actual, np.full(4, expected, dtype=np.float32))


def test_bulyan_aggregate_fit_with_no_malicious_client_is_the_mean() -> None:
    """Mirrors flwr server/strategy/bulyan_test.py::test_aggregate_fit: f=0 and six results
    (one at 12.0) give the mean of all six; proxies are bare MagicMocks, as there."""
    # Prepare
    values = [0.2, 0.5, 0.7, 12.0, 0.1, 0.1]
    expected = np.full(4, sum(values) / 6, dtype=np.float32)
    # Execute
    parameters, _ = _legacy(Bulyan(num_malicious_nodes=0)).aggregate_fit(
        server_round=1, results=_results(values, anonymous=True), failures=[]
    )
    # Assert
    actual = _single_array(parameters)
    assert actual.dtype == np.float32
    np.testing.assert_array_max_ulp(actual, expected, maxulp=2)


def test_fit_metrics_come_from_the_selected_results_only() -> None:
    """No Flower legacy test; DEVIATION from Flower's legacy Krum (all results): Krum with f=1
    over 4 honest results and one far outlier passes only the selected result's metrics."""
    # Prepare
    seen: list[list[tuple[int, dict[str, Scalar]]]] = []

    def spy(fit_metrics: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
        seen.append(fit_metrics)
        return {"train-loss": fit_metrics[0][1]["train-loss"]}

    legacy = _legacy(Krum(num_malicious_nodes=1), fit_metrics_aggregation_fn=spy)
    # Krum scores (2 neighbours, d=4): 0.29, 0.13, 0.18, 0.45, huge -> result 1 (1.1).
    results = _results(
        [1.0, 1.1, 1.25, 1.4, 50.0],
        num_examples=[10, 20, 30, 40, 50],
        metrics=[{"train-loss": loss} for loss in (0.1, 0.2, 0.3, 0.4, 9.0)],
    )
    # Execute
    parameters, metrics = legacy.aggregate_fit(1, results, [])
    # Assert
    assert seen == [[(20, {"train-loss": 0.2})]]
    assert metrics["train-loss"] == 0.2
    np.testing.assert_allclose(_single_array(parameters), np.full(4, 1.1), rtol=1e-6)
