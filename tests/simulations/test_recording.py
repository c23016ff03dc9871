"""The run directory writer."""

from __future__ import annotations

import csv
import json
import tomllib
from pathlib import Path

import torch

from flower_suite.models import MLP
from flower_suite.simulations.config import load_config
from flower_suite.simulations.engine.recording import RunRecorder, unique_run_dir


def test_recorder_writes_every_artifact(tmp_path: Path) -> None:
    """config.toml re-loads, jsonl and csv hold the rows, model and plot exist."""
    # Prepare
    config = load_config("digits_fedavg", ["rounds=2"])
    recorder = RunRecorder.create(tmp_path, "t")
    rows = [
        {"round": 0, "test-acc": 0.1, "test-loss": 2.3},
        {"round": 1, "test-acc": 0.5, "test-loss": 1.0, "train-loss": 1.5},
    ]
    model = MLP()
    # Execute
    recorder.write_config(config.to_dict())
    recorder.write_partitions("client 0 1\n0 3 4")
    for row in rows:
        recorder.log_round(row)
    recorder.finish(rows, model, {"name": "t", "final": rows[-1]})
    run_dir = recorder.run_dir
    # Assert
    reloaded = load_config(run_dir / "config.toml")
    assert reloaded == config
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines == rows
    with (run_dir / "metrics.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [r["round"] for r in table] == ["0", "1"]
    assert table[0]["train-loss"] == "" and float(table[1]["train-loss"]) == 1.5
    state = torch.load(run_dir / "model.pt")
    assert torch.equal(state["net.1.weight"], model.state_dict()["net.1.weight"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final"]["test-acc"] == 0.5 and "torch" in summary
    assert (run_dir / "plot.png").stat().st_size > 1000
    assert tomllib.loads((run_dir / "config.toml").read_text())["rounds"] == 2


def test_run_dirs_are_never_reused(tmp_path: Path) -> None:
    """Two runs with the same name in the same second get different directories."""
    first = unique_run_dir(tmp_path, "same")
    second = unique_run_dir(tmp_path, "same")
    assert first != second and first.is_dir() and second.is_dir()
