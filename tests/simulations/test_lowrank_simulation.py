"""PUFFERFISH warm-up through the real Ray simulation: the switch, the bytes, the learning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord

from flower_suite.simulations import load_config, run_experiment
from flower_suite.simulations.config import ConfigError
from flower_suite.simulations.engine.task import ExperimentTask


@pytest.mark.simulation
def test_warmup_switch_cuts_bytes_and_the_factorized_model_trains(tmp_path: Path) -> None:
    # Prepare: 4 clients, 6 rounds, switch after round 2.
    config = load_config(
        "digits_fedavg",
        [
            "num_clients=4",
            "rounds=6",
            "evaluate_clients=2",
            "lowrank.rank_ratio=0.25",
            "lowrank.warmup_rounds=2",
            "lowrank.lr_factor=0.25",
        ],
    )
    task = ExperimentTask(config)
    full_bytes = ArrayRecord(task.build_model().state_dict()).count_bytes()
    low_bytes = ArrayRecord(task.lowrank_spec.apply(task.build_model()).state_dict()).count_bytes()
    # Execute
    result = run_experiment(config, output_dir=tmp_path)
    rows = result.rows
    # Assert: rounds 1-2 exchange the full model, rounds 3-6 only the factors.
    for row in rows[1:3]:
        assert row["bytes-received"] == 4 * full_bytes
        assert row["global-bytes"] == full_bytes
    for row in rows[3:]:
        assert row["bytes-received"] == 4 * low_bytes
        # 4 train + 2 evaluate instructions, all factorized.
        assert row["bytes-sent"] == 6 * low_bytes
        assert row["global-bytes"] == low_bytes
    assert full_bytes / low_bytes > 3.0
    # The factorized model keeps learning after the switch (server test set, client losses).
    assert rows[-1]["test-acc"] > rows[2]["test-acc"]
    assert rows[-1]["test-acc"] > 0.85, rows
    assert rows[-1]["train-loss"] < rows[3]["train-loss"]
    assert 0.5 < rows[-1]["client-eval-acc"] <= 1.0
    # The saved state dict is the factorized model's.
    state = torch.load(result.run_dir / "model.pt")
    assert list(state) == list(task.lowrank_spec.apply(task.build_model()).state_dict())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lowrank.rank_ratio=1.5", "lowrank.rank_ratio"),
        ("lowrank.warmup_rounds=15", "lowrank.warmup_rounds"),
        ("lowrank.lr_factor=0", "lowrank.lr_factor"),
        ('lowrank.keep_full_rank="features"', "lowrank.keep_full_rank"),
    ],
)
def test_bad_lowrank_config_names_the_field(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("digits_fedavg", ["lowrank.rank_ratio=0.25", override])


def test_unknown_kept_layer_fails_before_simulating() -> None:
    config = load_config(
        "digits_fedavg", ["lowrank.rank_ratio=0.25", 'lowrank.keep_full_rank=["nope"]']
    )
    with pytest.raises(ValueError, match="lowrank: keep_full_rank names no module"):
        ExperimentTask(config).check_model_fits_data()
