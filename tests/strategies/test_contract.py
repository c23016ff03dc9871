"""Every registered strategy declares its contract: capabilities, minimum replies, size check."""

from __future__ import annotations

import inspect

import pytest
from flwr.serverapp import strategy as flwr_strategy

from flower_suite.models import MLP
from flower_suite.strategies import STRATEGIES, FedAvg, Krum, MultiKrum, SecAggPlus
from flower_suite.strategies.contract import (
    Capabilities,
    ContractError,
    ExperimentSizes,
    StrategyContract,
    capabilities_of,
)

BUILTIN = sorted(n for n in STRATEGIES if STRATEGIES.get(n).__module__.startswith("flower_suite"))
ARGS = {"crfl": {"rho": 1.0}, "fedma": {"model_fn": MLP}}


@pytest.mark.parametrize("name", BUILTIN)
def test_every_registered_strategy_declares_its_contract(name: str) -> None:
    factory = STRATEGIES.get(name)
    assert isinstance(getattr(factory, "capabilities", None), Capabilities), name
    strategy = STRATEGIES.create(name, **ARGS.get(name, {}))
    assert isinstance(strategy, StrategyContract)
    assert strategy.min_replies() >= 1
    strategy.check_sizes(ExperimentSizes(num_clients=120, clients_per_round=120))


def test_size_check_names_the_field_and_the_need() -> None:
    with pytest.raises(ContractError, match=r"clients_per_round: Krum needs at least 9") as err:
        Krum(num_malicious_nodes=3).check_sizes(ExperimentSizes(20, 5))
    assert err.value.field == "clients_per_round"
    MultiKrum(num_malicious_nodes=1, num_nodes_to_select=4).check_sizes(ExperimentSizes(20, 5))
    with pytest.raises(ContractError, match="needs at least 6"):
        MultiKrum(num_malicious_nodes=1, num_nodes_to_select=6).check_sizes(ExperimentSizes(9, 5))


def test_secure_aggregation_capability_is_declared_not_listed() -> None:
    assert capabilities_of(FedAvg).secure_aggregation
    assert not capabilities_of(Krum).secure_aggregation
    assert capabilities_of(flwr_strategy.FedAdam).secure_aggregation  # Flower's FedAvg family
    assert not capabilities_of(flwr_strategy.FedMedian).secure_aggregation
    assert capabilities_of(STRATEGIES.get("detox")).server_assigned_data
    assert capabilities_of(STRATEGIES.get("fedma")).changes_architecture
    with pytest.raises(ValueError, match="individual updates"):
        SecAggPlus(Krum())


def test_secagg_size_check_refuses_too_few_clients() -> None:
    with pytest.raises(ContractError, match=r"secagg: .*at least 3"):
        SecAggPlus(FedAvg()).check_sizes(ExperimentSizes(10, 2))


def test_detox_sizes_are_checked_before_the_run() -> None:
    """Measured: DETOX vote-group errors surfaced at the first configure_train, in Ray."""
    detox = STRATEGIES.create("detox", redundancy=3)
    with pytest.raises(ContractError, match="num_clients: DETOX needs a multiple of"):
        detox.check_sizes(ExperimentSizes(10, 10))
    with pytest.raises(ContractError, match="clients_per_round: DETOX trains every node"):
        detox.check_sizes(ExperimentSizes(9, 6))
    bad_groups = STRATEGIES.create(
        "detox", redundancy=3, num_malicious_nodes=2, num_vote_groups=3, inner="multi_krum"
    )
    with pytest.raises(ContractError, match=r"strategy\.num_vote_groups"):
        bad_groups.check_sizes(ExperimentSizes(9, 9))


def test_detox_declares_it_needs_a_simulation() -> None:
    caps = capabilities_of(STRATEGIES.get("detox"))
    assert caps.simulation_only and caps.full_participation and caps.needs_sent_model
    assert not capabilities_of(FedAvg).simulation_only


@pytest.mark.parametrize("name", BUILTIN)
def test_constructor_parameters_are_explicit_and_typed(name: str) -> None:
    """No ``*args``/``**kwargs`` forwarding: IDE help, positional calls and the config
    layer's keyword check all read one signature."""
    factory = STRATEGIES.get(name)
    init = factory.__init__ if isinstance(factory, type) else factory
    params = list(inspect.signature(init).parameters.values())[1:]  # drop self
    for param in params:
        assert param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD), (name, param)
        assert param.annotation is not param.empty, (name, param.name)
    assert STRATEGIES.parameters(name).keys() == {p.name for p in params}
