"""The [secagg] config section: validation, and a secure run through the config runner."""

from __future__ import annotations

import pytest

from flower_suite.simulations import load_config, run_experiment
from flower_suite.simulations.config import ConfigError
from flower_suite.simulations.engine.server import build_strategy
from flower_suite.strategies.secagg import SecAggPlus

SMALL = ["rounds=3", "num_clients=6"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["secagg.shares=5"], r"secagg\.shares: unknown keyword"),
        (["secagg.num_shares=4"], "secagg: num_shares .* must be odd"),
        (["secagg.clipping_range=-1.0"], "secagg: clipping_range"),
        (["secagg.num_shares=5", "strategy.name=krum"], "secagg: strategy 'krum' inspects"),
        (["secagg.num_shares=5", "lowrank.rank_ratio=0.25"], "secagg: not supported together"),
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
    from flower_suite.simulations.engine.runner import prepare

    config = load_config("digits_fedavg", ["num_clients=5", "secagg.max_weight=100"])
    with pytest.raises(ConfigError, match=r"secagg.max_weight: 100 is below .* 288"):
        prepare(config)
