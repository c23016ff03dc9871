"""End-to-end: a tiny real grid on the Ray simulation engine, run twice (resume)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from flower_suite.simulations.bench import ProgressEvent, run_bench

pytestmark = pytest.mark.simulation

# 2 defenses x 1 seed x 2 rounds, 4 clients: the smallest grid that exercises everything.
GRID: dict[str, Any] = {
    "name": "e2e",
    "base": "digits_fedavg",
    "seeds": [0],
    "set": {"rounds": 2, "num_clients": 4},
    "axis": {
        "defense": [
            {"label": "fedavg", "strategy.name": "fedavg"},
            {"label": "median", "strategy.name": "fedmedian"},
        ]
    },
}


def test_tiny_grid_runs_then_resumes(tmp_path: Path) -> None:
    """The cells run in two spawned processes (--parallel 2); a second run skips both and
    rebuilds the same report from the stored rows."""
    # Execute: first run, in parallel subprocesses
    events: list[ProgressEvent] = []
    first = run_bench(GRID, output_dir=tmp_path, parallel=2, on_progress=events.append)
    # Assert: both cells ran and learned
    assert [c.status for c in first.cells] == ["ran", "ran"], [c.error for c in first.cells]
    assert sorted(e.status for e in events) == ["done", "done", "queued", "queued"]
    for cell in first.cells:
        assert [r["round"] for r in cell.rows] == [0, 1, 2]
        assert cell.rows[-1]["test-acc"] > cell.rows[0]["test-acc"] + 0.3, cell.rows
    median_rows = first.cells[1].rows
    # FedMedian is a robust rule: the selection hook records its rule info each round.
    assert any(key.startswith("rule-") or key == "selected-nodes" for key in median_rows[1])

    # Assert: outputs
    root = tmp_path / "e2e"
    assert first.output_dir == root
    with (root / "results.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [(r["defense"], r["round"]) for r in table] == [
        ("fedavg", "0"),
        ("fedavg", "1"),
        ("fedavg", "2"),
        ("median", "0"),
        ("median", "1"),
        ("median", "2"),
    ]
    for cell in first.cells:
        assert cell.directory is not None and (cell.directory / "done").is_file()
        stored = [json.loads(x) for x in (cell.directory / "rows.jsonl").read_text().splitlines()]
        assert stored == cell.rows
        final = [r for r in table if r["defense"] == cell.cell.label_dict["defense"]][-1]
        assert float(final["test-acc"]) == pytest.approx(cell.rows[-1]["test-acc"])
    summary = (root / "summary.md").read_text()
    assert "| defense | seeds | test-acc | time (s) |" in summary
    fedavg_final = first.cells[0].rows[-1]["test-acc"]
    assert f"| fedavg | 1 | {fedavg_final:.3f} |" in summary
    assert (root / "test-acc_vs_round.png").read_bytes()[:4] == b"\x89PNG"

    # Execute: second run, serial, resumes
    events.clear()
    second = run_bench(GRID, output_dir=tmp_path, on_progress=events.append)
    # Assert: nothing ran, same results
    assert [c.status for c in second.cells] == ["skipped", "skipped"]
    assert [e.status for e in events] == ["skipped", "skipped"]
    assert [c.rows for c in second.cells] == [c.rows for c in first.cells]
    assert (root / "summary.md").read_text() == summary
