"""FedMA from an experiment config: the runner passes the model and follows grown widths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flower_suite.simulations import load_config, run_experiment

pytestmark = pytest.mark.simulation


def test_fedma_config_runs_and_saves_the_grown_model(tmp_path: Path) -> None:
    config = load_config(
        "digits_fedavg",
        [
            "strategy.name=fedma",
            "rounds=1",
            "num_clients=4",
            "partition.scheme=dirichlet",
            "strategy.max_width_ratio=1.25",
            "strategy.gamma0=7.0",
        ],
    )
    result = run_experiment(config, output_dir=tmp_path)
    first, last = result.rows[0], result.rows[-1]
    assert first["test-acc"] < 0.2
    assert last["test-acc"] > 0.8, result.rows
    # The global model may grow (at most 1.25x per layer) and the server evaluates it.
    assert first["global-bytes"] <= last["global-bytes"] <= 1.25 * 1.25 * first["global-bytes"]
    state = torch.load(result.run_dir / "model.pt")
    final = result.final_arrays
    assert list(state) == list(final.keys())
    assert all(tuple(state[k].shape) == tuple(final[k].shape) for k in state)
    assert last["bytes-sent"] > 0 and last["bytes-received"] > 0
