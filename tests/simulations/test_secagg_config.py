"""The [secagg] config section: validation, and a secure run through the config runner."""

from __future__ import annotations

import pytest

from flower_suite.simulations import load_config, run_experiment
from flower_suite.simulations.config import ConfigError
from flower_suite.simulations.engine.prepare import prepare
from flower_suite.simulations.engine.server import build_strategy
from flower_suite.strategies.robust_rules import FedMedian
from flower_suite.strategies.secagg import SecAggPlus
from flower_suite.strategies.secure_robust import SecureRobust

SMALL = ["rounds=3", "num_clients=6"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["secagg.shares=5"], r"secagg\.shares: unknown keyword"),
        (["secagg.num_shares=4"], "secagg: num_shares .* must be odd"),
        (["secagg.clipping_range=-1.0"], "secagg: clipping_range"),
        (["secagg.num_shares=5", "strategy.name=krum"], "secagg: strategy 'krum' inspects"),
        (["secagg.num_shares=5", "lowrank.rank_ratio=0.25"], "secagg: not supported together"),
        (["secagg.group_size=2"], r"secagg\.group_size: group_size must be >= 3"),
        (["secagg.group_size=7"], r"secagg\.group_size: 6 clients per round cannot form"),
        (["secagg.group_size=3", "secagg.seed=1"], r"secagg\.seed: unknown keyword"),
        (["secagg.group_size=3", "strategy.name=fedma"], "secagg: strategy 'fedma'"),
        (
            ["secagg.group_size=3", "attack.name=alie", "attack.num_attackers=1"],
            r"attack\.name: 'alie' as configured is omniscient .*source = .own.",
        ),
        (
            [
                "secagg.group_size=3",
                "attack.name=gaussian_noise",
                "attack.num_attackers=1",
                "clients_per_round=3",
            ],
            "attack.pattern: fixed_frequency re-targets a partial sample",
        ),
    ],
)
def test_bad_secagg_sections_name_the_field(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("digits_fedavg", [*SMALL, *overrides])


def test_build_strategy_wraps_only_when_asked() -> None:
    plain = build_strategy(load_config("digits_fedavg", SMALL))
    assert not isinstance(plain, SecAggPlus)
    wrapped = build_strategy(load_config("digits_fedavg", [*SMALL, "secagg.num_shares=5"]))
    assert isinstance(wrapped, SecAggPlus)
    assert wrapped.config.num_shares == 5


@pytest.mark.simulation
def test_secure_run_matches_plain_fedavg_accuracy() -> None:
    plain = run_experiment(load_config("digits_fedavg", SMALL), record=False).rows
    # Round-to-nearest quantization makes the secure aggregate deterministic (stochastic
    # rounding draws fresh OS randomness each run, moving round-3 accuracy by a few points).
    secure_config = load_config(
        "digits_fedavg",
        [
            *SMALL,
            "secagg.num_shares=5",
            "secagg.reconstruction_threshold=3",
            "secagg.stochastic_rounding=false",
        ],
    )
    secure = run_experiment(secure_config, record=False).rows
    # Same seeds and sampling; only the quantization error (step 3.8e-6) differs.
    gap = abs(secure[-1]["test-acc"] - plain[-1]["test-acc"])
    assert gap <= 0.01, (secure[-1]["test-acc"], plain[-1]["test-acc"])
    assert secure[-1]["test-acc"] > 0.8
    # The masked vectors are metered (packed integers, not float32 arrays).
    assert secure[-1]["bytes-received"] > 0


def test_max_weight_below_a_clients_example_count_is_a_config_error() -> None:
    """A secure client refuses a weight above max_weight (it would drop out of every round):
    the runner says so before Ray starts, naming the field."""
    config = load_config("digits_fedavg", ["num_clients=5", "secagg.max_weight=100"])
    with pytest.raises(ConfigError, match=r"secagg.max_weight: 100 is below .* 288"):
        prepare(config)


def test_group_size_runs_the_configured_robust_rule_over_secure_group_means() -> None:
    config = load_config(
        "digits_fedavg", [*SMALL, "seed=5", "strategy.name=fedmedian", "secagg.group_size=3"]
    )
    strategy = build_strategy(config)
    assert isinstance(strategy, SecureRobust) and isinstance(strategy.strategy, FedMedian)
    assert (strategy.group_size, strategy.seed) == (3, 5)  # the experiment's seed


def test_client_side_attacks_run_under_group_wise_secure_aggregation() -> None:
    for attack in (
        ["attack.name=gaussian_noise"],
        ["attack.name=alie", "attack.params.source='own'"],
    ):
        config = load_config(
            "digits_fedavg",
            [*SMALL, "strategy.name=fedmedian", "secagg.group_size=3", "attack.num_attackers=1",
             *attack],
        )  # fmt: skip
        assert isinstance(build_strategy(config), SecureRobust)


def test_a_rule_that_needs_more_group_means_than_a_round_forms_is_refused_before_the_run() -> None:
    # Krum with f = 1 needs 5 inputs; 6 clients in groups of 3 give 2 group means
    config = load_config(
        "digits_fedavg",
        [*SMALL, "strategy.name=krum", "strategy.num_malicious_nodes=1", "secagg.group_size=3"],
    )
    with pytest.raises(ConfigError, match=r"secagg\.group_size: the rule sees 2 group means"):
        prepare(config)


@pytest.mark.simulation
def test_secure_median_of_group_means_trains_and_repeats_exactly() -> None:
    overrides = [
        "rounds=3",
        "num_clients=9",
        "engine='inprocess'",
        "model.name=mlp",
        "strategy.name=fedmedian",
        "secagg.group_size=3",
        "secagg.max_weight=200",
        "secagg.stochastic_rounding=false",
    ]
    first = run_experiment(load_config("digits_fedavg", overrides), record=False).rows
    again = run_experiment(load_config("digits_fedavg", overrides), record=False).rows
    assert [r["test-acc"] for r in first] == [r["test-acc"] for r in again]
    assert first[-1]["test-acc"] > 0.8
    assert all(r["rule-secure-groups"] == 3 for r in first[1:])
    assert all(r["rule-secure-groups-aborted"] == 0 for r in first[1:])


@pytest.mark.simulation
def test_colluding_alie_under_group_wise_secure_aggregation_is_measured_without_norms() -> None:
    config = load_config(
        "digits_fedavg",
        [
            "rounds=2",
            "num_clients=12",
            "engine='inprocess'",
            "model.name=mlp",
            "strategy.name=fedmedian",
            "secagg.group_size=3",
            "secagg.max_weight=200",
            "attack.name=alie",
            "attack.params.source='own'",
            "attack.params.z=1.0",
            "attack.num_attackers=2",
            "attack.pattern=fixed_pool",
        ],
    )
    rows = run_experiment(config, record=False).rows
    for row in rows[1:]:
        assert row["attacker-participated"] == 2  # every client is sampled
        assert 0 <= row["attacker-selected"] <= 2
        assert "update-norm-mean" not in row  # nobody sees an update
        assert row["rule-secure-groups"] == 4
    assert rows[-1]["test-acc"] > 0.5
