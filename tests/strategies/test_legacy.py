"""The legacy-API adapter gives the same model as the Message-API strategy."""

from __future__ import annotations

from unittest.mock import Mock

import numpy as np
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from strategy_fixtures import configure, flat, global_arrays, updates_around

from flower_suite.strategies import Krum, LegacyRobust


def test_legacy_krum_matches_message_api(task_identity: None) -> None:
    """Same replies through aggregate_fit and aggregate_train -> identical parameters."""
    # Prepare
    base = global_arrays()
    rng = np.random.default_rng(0)
    deltas = [rng.normal(0, 0.01, 15) for _ in range(9)] + [np.full(15, 50.0)] * 2
    replies = updates_around(base, deltas)
    message_api = Krum(num_malicious_nodes=2)
    configure(message_api, base, list(range(100, 111)))
    expected, _ = message_api.aggregate_train(1, replies)

    manager = SimpleClientManager()
    proxies = []
    for i in range(11):
        proxy = Mock(spec=ClientProxy)
        proxy.cid = str(100 + i)
        manager.register(proxy)
        proxies.append(proxy)
    legacy = LegacyRobust(Krum(num_malicious_nodes=2), min_fit_clients=11, min_available_clients=11)
    base_list = [base["w"].numpy(), base["b"].numpy()]
    legacy.configure_fit(1, ndarrays_to_parameters(base_list), manager)
    results = [
        (
            proxy,
            FitRes(
                status=Status(Code.OK, ""),
                parameters=ndarrays_to_parameters(
                    [r.content["arrays"]["w"].numpy(), r.content["arrays"]["b"].numpy()]
                ),
                num_examples=10,
                metrics={},
            ),
        )
        for proxy, r in zip(proxies, replies, strict=True)
    ]
    # Execute
    parameters, metrics = legacy.aggregate_fit(1, results, [])
    # Assert
    got = np.concatenate([a.reshape(-1) for a in parameters_to_ndarrays(parameters)])
    np.testing.assert_array_equal(got, flat(expected))
    assert legacy.records[1].selected == message_api.records[1].selected
    assert metrics["rejected-results"] == 0
