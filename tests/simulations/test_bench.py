"""The benchmark harness without Ray: grid validation, cells, hashing, resume, reports.

Runs use a fake ``run_experiment`` (synthetic rows from the cell's config); the real
simulation is in ``test_bench_e2e.py``.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from flower_suite.simulations.bench import (
    ProgressEvent,
    config_hash,
    expand,
    is_done,
    load_grid,
    parse_grid,
    run_bench,
)
from flower_suite.simulations.bench.report import (
    ReportConfig,
    final_value,
    markdown_table,
    summarize,
    tidy_rows,
    write_report,
)
from flower_suite.simulations.cli import main
from flower_suite.simulations.config import ConfigError, load_config
from flower_suite.simulations.engine import runner
from flower_suite.simulations.engine.server import RunResult

REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG"


def grid_dict(**changes: Any) -> dict[str, Any]:
    """2 attacks x 2 defenses x 2 seeds on the digits preset, 3 rounds."""
    grid: dict[str, Any] = {
        "name": "unit",
        "base": "digits_fedavg",
        "seeds": [0, 1],
        "set": {"rounds": 3},
        "axis": {
            "attack": [{"label": "none"}, {"label": "lr", "client.lr": 0.05}],
            "defense": [
                {"label": "fedavg", "strategy.name": "fedavg"},
                {"label": "krum", "strategy": {"name": "krum", "num_malicious_nodes": 1}},
            ],
        },
    }
    grid.update(changes)
    return grid


# --- Grid validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": None}, "name:"),
        ({"name": "has space"}, "name:"),
        ({"base": None}, "base: missing"),
        ({"base": "no_such_experiment"}, "base: experiment file"),
        ({"sedes": [0]}, "sedes: unknown field"),
        ({"seeds": 3}, "seeds: expected a non-empty list"),
        ({"seeds": [0, -1]}, "seeds: expected integers >= 0"),
        ({"seeds": [1, 1]}, "seeds: repeated seed"),
        ({"set": {"seed": 3}}, "set.seed: set by the bench harness"),
        ({"set": {"name": "x"}}, "set.name: set by the bench harness"),
        ({"axis": {"defense": []}}, "axis.defense: expected a non-empty array"),
        ({"axis": {"defense": [{"strategy.name": "krum"}]}}, "axis.defense[0].label: missing"),
        ({"axis": {"defense": [{"label": "a b"}]}}, "axis.defense[0].label: 'a b'"),
        (
            {"axis": {"defense": [{"label": "x"}, {"label": "x"}]}},
            "axis.defense[1].label: 'x' appears twice",
        ),
        ({"axis": {"seed": [{"label": "x"}]}}, "axis.seed: 'seed' is reserved"),
        ({"axis": {"d": [{"label": "x", "seed": 2}]}}, "axis.d[0].seed: set by the bench"),
        (
            {
                "axis": {
                    "a": [{"label": "x", "client.lr": 0.1}],
                    "b": [{"label": "y", "client": {"lr": 0.2}}],
                }
            },
            "axis.b: sets client.lr, which axis.a also sets",
        ),
        ({"report": {"last_round": 2}}, "report.last_round: unknown field"),
        ({"report": {"last_rounds": 0}}, "report.last_rounds: expected an integer >= 1"),
        ({"report": {"panels": "seed"}}, "report.panels: 'seed' is not an axis"),
        ({"report": {"metrics": "test-acc"}}, "report.metrics: expected a list"),
    ],
)
def test_bad_grid_names_the_field(changes: dict[str, Any], field: str) -> None:
    """Every malformed grid fails with a ConfigError whose message starts at the field."""
    with pytest.raises(ConfigError) as info:
        parse_grid(grid_dict(**changes))
    assert str(info.value).startswith(field), str(info.value)


def test_bad_cell_config_names_the_cell_and_field() -> None:
    """A cell whose experiment is invalid is reported before anything runs."""
    grid = parse_grid(
        grid_dict(axis={"defense": [{"label": "ok"}, {"label": "bad", "strategy.name": "krumm"}]})
    )
    with pytest.raises(ConfigError, match=r"cell defense=bad seed=0: strategy\.name"):
        expand(grid)


def test_grid_file_base_relative_to_the_grid(tmp_path: Path) -> None:
    """`base` is looked up next to the grid file first, so grids work from any directory."""
    (tmp_path / "exp.toml").write_text('name = "exp"\nrounds = 2\nseed = 7\n')
    (tmp_path / "grids").mkdir()
    path = tmp_path / "grids" / "g.toml"
    path.write_text('name = "g"\nbase = "../exp.toml"\n')
    grid = load_grid(path)
    assert grid.seeds == (7,)  # default: the base experiment's seed
    (cell,) = expand(grid)
    assert cell.config.rounds == 2 and cell.describe() == "seed=7"


def test_grid_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_grid(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_grid(bad)


# --- Cells and hashing ------------------------------------------------------------------------


def test_cells_are_the_product_with_seeds_innermost() -> None:
    grid = parse_grid(grid_dict())
    cells = expand(grid)
    assert grid.size == len(cells) == 8
    assert [c.index for c in cells] == list(range(1, 9))
    assert [c.describe() for c in cells[:3]] == [
        "attack=none defense=fedavg seed=0",
        "attack=none defense=fedavg seed=1",
        "attack=none defense=krum seed=0",
    ]
    krum_lr = cells[-1]
    assert krum_lr.describe() == "attack=lr defense=krum seed=1"
    assert krum_lr.config.seed == 1 and krum_lr.config.rounds == 3
    assert krum_lr.config.client.lr == 0.05  # the attack axis
    # A nested table merges like dotted keys.
    assert krum_lr.config.strategy.name == "krum"
    assert dict(krum_lr.config.strategy.kwargs) == {"num_malicious_nodes": 1}
    assert cells[0].config.client.lr == 0.1  # the preset's value where no axis sets it
    assert len({c.key for c in cells}) == 8
    assert len({c.dir_name for c in cells}) == 8
    assert cells[0].dir_name.startswith("none-fedavg-s0-")


def test_hash_follows_the_resolved_config_not_its_name() -> None:
    a = load_config("digits_fedavg", values={"rounds": 3})
    renamed = load_config("digits_fedavg", values={"rounds": 3, "name": "other"})
    same_by_other_means = load_config("digits_fedavg", ["rounds=3"])
    longer = load_config("digits_fedavg", values={"rounds": 4})
    assert config_hash(a) == config_hash(renamed) == config_hash(same_by_other_means)
    assert config_hash(a) != config_hash(longer)


def test_hash_ignores_where_a_cell_ran_and_sections_left_at_their_defaults() -> None:
    """Both engines give the same rows, so a grid resumes across engines and clusters; a
    section added by a later release with a neutral default keeps old cells' hashes."""
    a = load_config("digits_fedavg", ["rounds=3"])
    elsewhere = load_config("digits_fedavg", ["rounds=3", "engine=inprocess", "watchdog_s=5"])
    on_a_cluster = load_config("digits_fedavg", ["rounds=3", "ray.address=auto"])
    assert config_hash(a) == config_hash(elsewhere) == config_hash(on_a_cluster)
    spelled_out = load_config("digits_fedavg", ["rounds=3", "compression.name=none"])
    assert config_hash(a) == config_hash(spelled_out)
    compressed = load_config("digits_fedavg", ["rounds=3", "compression.name=qsgd"])
    assert config_hash(a) != config_hash(compressed)


# --- Running with a fake simulation -----------------------------------------------------------


def fake_rows(config: Any) -> list[dict[str, Any]]:
    """Deterministic rows: accuracy rises per round; krum has a backdoor metric, lists too."""
    rows = []
    for r in range(config.rounds + 1):
        row: dict[str, Any] = {"round": r, "test-acc": 0.1 + 0.2 * r + 0.01 * config.seed}
        if config.strategy.name == "krum" and r > 0:
            row["backdoor-acc"] = 0.5 - 0.1 * r
            row["selected-partitions"] = [r, r + 1]
        row["elapsed-s"] = float(r)
        rows.append(row)
    return rows


@pytest.fixture
def fake_runner(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the Ray runner; returns the names of the configs it ran."""
    ran: list[str] = []

    def run_experiment(
        config: Any, *, on_round: Callable[[Mapping[str, Any]], None] | None = None, **_: Any
    ) -> RunResult:
        if config.client.lr == 0.01:
            raise RuntimeError("simulated crash")
        ran.append(config.name)
        rows = fake_rows(config)
        for row in rows:
            if on_round is not None:
                on_round(row)
        return RunResult(config=config, rows=rows)

    monkeypatch.setattr(runner, "run_experiment", run_experiment)
    return ran


def test_run_resume_and_changed_cells(tmp_path: Path, fake_runner: list[str]) -> None:
    """First run: all cells; second: none; a changed [set] re-runs every cell; --no-resume too."""
    events: list[ProgressEvent] = []
    result = run_bench(grid_dict(), output_dir=tmp_path, on_progress=events.append)
    assert result.output_dir == tmp_path / "unit"
    assert len(fake_runner) == 8 and result.count("ran") == 8
    assert [e.status for e in events] == ["start", "done"] * 8
    assert events[1].line().startswith("[1/8] attack=none defense=fedavg seed=0 ... 0 s, main ")
    for cell in result.cells:
        assert cell.directory is not None and is_done(cell.directory, cell.cell)
        assert json.loads((cell.directory / "cell.json").read_text())["key"] == cell.cell.key
        assert len((cell.directory / "rows.jsonl").read_text().splitlines()) == 4
        assert load_config(cell.directory / "config.toml").strategy == cell.cell.config.strategy

    events.clear()
    again = run_bench(grid_dict(), output_dir=tmp_path, on_progress=events.append)
    assert len(fake_runner) == 8 and again.count("skipped") == 8
    assert {e.status for e in events} == {"skipped"}
    assert "finished earlier (skipped)" in events[0].line()
    assert [c.rows for c in again.cells] == [c.rows for c in result.cells]
    assert again.files["results"].read_text() == result.files["results"].read_text()

    # Another rounds value is another experiment: nothing counts as finished.
    changed = run_bench(grid_dict(set={"rounds": 2}), output_dir=tmp_path)
    assert changed.count("ran") == 8 and len(fake_runner) == 16
    # The old cells are kept (their hash differs) but not reported.
    assert len(list((tmp_path / "unit" / "cells").iterdir())) == 16
    assert {len(c.rows) for c in changed.cells} == {3}

    run_bench(grid_dict(set={"rounds": 2}), output_dir=tmp_path, resume=False)
    assert len(fake_runner) == 24


def test_done_marker_of_another_config_is_not_finished(
    tmp_path: Path, fake_runner: list[str]
) -> None:
    """A `done` marker whose hash is not the cell's (e.g. a hand-copied dir) is re-run."""
    first = run_bench(grid_dict(seeds=[0]), output_dir=tmp_path)
    cell = first.cells[0]
    assert cell.directory is not None
    (cell.directory / "done").write_text(json.dumps({"key": "0" * 64}))
    assert not is_done(cell.directory, cell.cell)
    second = run_bench(grid_dict(seeds=[0]), output_dir=tmp_path)
    assert [c.status for c in second.cells] == ["ran"] + ["skipped"] * 3


def test_interrupted_cell_is_rerun_from_scratch(tmp_path: Path, fake_runner: list[str]) -> None:
    """Rows without a `done` marker (a killed run) are discarded and the cell re-run."""
    first = run_bench(grid_dict(seeds=[0]), output_dir=tmp_path)
    directory = first.cells[0].directory
    assert directory is not None
    (directory / "done").unlink()
    with (directory / "rows.jsonl").open("a") as fh:
        fh.write('{"round": 99}\n')
    second = run_bench(grid_dict(seeds=[0]), output_dir=tmp_path)
    assert second.cells[0].status == "ran"
    assert [r["round"] for r in second.cells[0].rows] == [0, 1, 2, 3]
    assert len((directory / "rows.jsonl").read_text().splitlines()) == 4


def test_failed_cell_is_recorded_and_others_run(tmp_path: Path, fake_runner: list[str]) -> None:
    grid = grid_dict(
        seeds=[0],
        axis={"lr": [{"label": "ok"}, {"label": "crash", "client.lr": 0.01}]},
    )
    events: list[ProgressEvent] = []
    result = run_bench(grid, output_dir=tmp_path, on_progress=events.append)
    assert [c.status for c in result.cells] == ["ran", "failed"]
    failed = result.failed[0]
    assert "simulated crash" in failed.error
    assert failed.directory is not None
    assert "simulated crash" in (failed.directory / "error.txt").read_text()
    assert not (failed.directory / "done").exists()
    assert "FAILED" in events[-1].line()
    # The report covers the finished cell only.
    with result.files["results"].open() as fh:
        assert {row["lr"] for row in csv.DictReader(fh)} == {"ok"}


def test_dry_run_lists_cells_and_runs_nothing(tmp_path: Path, fake_runner: list[str]) -> None:
    result = run_bench(grid_dict(), output_dir=tmp_path, dry_run=True)
    assert [c.status for c in result.cells] == ["pending"] * 8
    assert fake_runner == [] and not (tmp_path / "unit").exists()


def test_parallel_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="parallel"):
        run_bench(grid_dict(), output_dir=tmp_path, parallel=0)


# --- Reports from synthetic rows --------------------------------------------------------------


def synthetic_cells() -> list[tuple[dict[str, str], int, str, list[dict[str, Any]]]]:
    cells = []
    for attack in ("none", "blackbox"):
        for defense in ("fedavg", "krum"):
            for seed in (0, 1):
                rows = [
                    {"round": 0, "test-acc": 0.1},
                    {"round": 1, "test-acc": 0.8 + seed * 0.02, "bytes-sent": 10.0},
                    {"round": 2, "test-acc": 0.9 + seed * 0.02, "elapsed-s": 5.0 + seed},
                ]
                if attack == "blackbox":
                    for row in rows[1:]:
                        row["backdoor-acc"] = 0.3 * row["round"] + (defense == "krum") * 0.1
                        row["attacker-selected"] = 1.0 if defense == "fedavg" else 0.0
                        row["selected-partitions"] = [0, 1]
                cells.append(({"attack": attack, "defense": defense}, seed, f"{seed}" * 12, rows))
    return cells


def test_final_value_uses_last_k_training_rounds() -> None:
    rows = [{"round": 0, "m": 0.0}, {"round": 1, "m": 1.0}, {"round": 2, "m": 3.0}]
    assert final_value(rows, "m", 1) == 3.0
    assert final_value(rows, "m", 2) == 2.0
    assert final_value(rows, "m", 10) == 2.0  # round 0 (the initial model) never counts
    assert final_value(rows[:1], "m", 1) == 0.0  # ... unless it is all there is
    assert final_value(rows, "other", 2) is None
    assert final_value([{"round": 1, "m": float("nan")}], "m", 1) is None


def test_tidy_rows_and_csv(tmp_path: Path) -> None:
    """One CSV row per cell x round; a metric a row lacks is empty; lists as JSON."""
    cells = synthetic_cells()
    rows = tidy_rows(["attack", "defense"], cells)
    assert len(rows) == 8 * 3
    files, _ = write_report(tmp_path, ["attack", "defense"], cells, ReportConfig())
    with files["results"].open() as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 24
    assert list(table[0])[:5] == ["attack", "defense", "seed", "cell", "round"]
    first = table[0]
    assert (first["attack"], first["defense"], first["seed"], first["round"]) == (
        "none",
        "fedavg",
        "0",
        "0",
    )
    assert first["backdoor-acc"] == "" and first["bytes-sent"] == ""
    attacked = [r for r in table if r["attack"] == "blackbox" and r["round"] == "2"]
    assert attacked[0]["selected-partitions"] == "[0,1]"
    assert float(attacked[0]["backdoor-acc"]) == pytest.approx(0.6)


def test_summary_mean_and_sd_over_seeds() -> None:
    cells = synthetic_cells()
    report = ReportConfig(last_rounds=2)
    summary = summarize(["attack", "defense"], cells, report)
    assert [(r["attack"], r["defense"]) for r in summary] == [
        ("none", "fedavg"),
        ("none", "krum"),
        ("blackbox", "fedavg"),
        ("blackbox", "krum"),
    ]
    row = summary[3]
    assert row["seeds"] == 2
    # test-acc over the last 2 rounds: seed 0 -> 0.85, seed 1 -> 0.87
    assert row["test-acc"] == pytest.approx(0.86)
    assert row["test-acc-sd"] == pytest.approx(0.0141421, rel=1e-4)
    assert row["backdoor-acc"] == pytest.approx(0.55)  # (0.4 + 0.7) / 2
    assert row["attacker-selected"] == 0.0
    assert row["elapsed-s"] == pytest.approx(5.5)
    assert summary[0]["backdoor-acc"] is None  # no attack, no backdoor metric


def test_markdown_table() -> None:
    cells = synthetic_cells()
    report = ReportConfig(last_rounds=2)
    summary = summarize(["attack", "defense"], cells, report)
    text = markdown_table(
        ["attack", "defense"],
        summary,
        ["test-acc", "backdoor-acc"],
        title="t",
        last_rounds=2,
    )
    lines = text.splitlines()
    assert lines[0] == "# t"
    assert "last 2 rounds" in text
    assert "| attack | defense | seeds | test-acc | backdoor-acc | time (s) |" in lines
    assert "| none | fedavg | 2 | 0.860 ± 0.014 | - | 6 |" in lines
    assert "| blackbox | krum | 2 | 0.860 ± 0.014 | 0.550 ± 0.000 | 6 |" in lines


def test_report_files_and_default_columns(tmp_path: Path) -> None:
    cells = synthetic_cells()
    files, _ = write_report(tmp_path, ["attack", "defense"], cells, ReportConfig())
    assert set(files) == {"results", "summary", "plot_rounds", "plot_scatter"}
    assert files["plot_rounds"].name == "backdoor-acc_vs_round.png"
    for key in ("plot_rounds", "plot_scatter"):
        assert files[key].read_bytes()[:4] == PNG
    lines = files["summary"].read_text().splitlines()
    header = next(line for line in lines if line.startswith("| attack"))
    # Default columns: main, target and the extras present (not bytes-sent, not lists).
    assert "| test-acc | backdoor-acc | attacker-selected | time (s) |" in header


def test_report_without_target_plots_main_only(tmp_path: Path) -> None:
    """A Byzantine-free grid: no backdoor metric, so the round plot shows main accuracy."""
    cells = [c for c in synthetic_cells() if c[0]["attack"] == "none"]
    files, _ = write_report(tmp_path, ["attack", "defense"], cells, ReportConfig())
    assert files["plot_rounds"].name == "test-acc_vs_round.png"
    assert "plot_scatter" not in files


def test_report_with_no_axes_and_no_cells(tmp_path: Path) -> None:
    one = [({}, 0, "a" * 12, [{"round": 1, "test-acc": 0.5}])]
    files, summary = write_report(tmp_path / "one", [], one, ReportConfig())
    assert summary[0]["seeds"] == 1 and files["plot_rounds"].is_file()
    files, summary = write_report(tmp_path / "none", [], [], ReportConfig())
    assert summary == [] and files["results"].is_file() and "plot_rounds" not in files


# --- CLI and the shipped grids ----------------------------------------------------------------


def test_cli_bad_grid_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "g.toml"
    path.write_text('name = "g"\nbase = "digits_fedavg"\nseeds = [0, 0]\n')
    assert main(["bench", str(path)]) == 2
    assert "seeds: repeated seed" in capsys.readouterr().out


def test_cli_dry_run_and_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_runner: list[str]
) -> None:
    path = tmp_path / "g.toml"
    path.write_text(
        'name = "g"\nbase = "digits_fedavg"\nseeds = [0, 1]\n[set]\nrounds = 2\n'
        '[[axis.defense]]\nlabel = "fedavg"\n[[axis.defense]]\nlabel = "median"\n'
        '"strategy.name" = "fedmedian"\n'
    )
    out_dir = tmp_path / "out"
    assert main(["bench", str(path), "--output", str(out_dir), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "[4/4] defense=median seed=1  to run" in out and "4 to run" in out
    assert fake_runner == []
    assert main(["bench", str(path), "--output", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "[2/4] defense=fedavg seed=1 ... 0 s, main 0.510" in out
    assert "4 ran, 0 skipped, 0 failed" in out and "| median | 2 |" in out
    assert main(["bench", str(path), "--output", str(out_dir)]) == 0
    assert "0 ran, 4 skipped" in capsys.readouterr().out


def test_robust_digits_grid_is_valid() -> None:
    grid = load_grid(REPO / "experiments" / "grids" / "robust_digits.toml")
    cells = expand(grid)
    assert len(cells) == 10
    assert {c.config.strategy.name for c in cells} == {
        "fedavg",
        "krum",
        "multikrum",
        "fedmedian",
        "rfa",
    }


def test_digits_edge_grid_is_valid() -> None:
    """Validated once the attack experiment exists (the `[attack]` config of issue 4)."""
    if not (REPO / "experiments" / "digits_edge.toml").is_file():
        pytest.skip("experiments/digits_edge.toml (the [attack] base experiment) not there yet")
    grid = load_grid(REPO / "experiments" / "grids" / "digits_edge.toml")
    cells = expand(grid)
    assert len(cells) == 3 * 5 * 5


def test_engine_option_reaches_every_cell_and_sizes_the_worker_pool() -> None:
    """``--engine inprocess`` runs every cell without Ray, one worker per core by default."""
    from flower_suite.simulations.bench.runs import default_parallelism, plan

    _, ray_cells = plan(grid_dict())
    assert {c.config.engine for c in ray_cells} == {"ray"}
    assert default_parallelism(ray_cells) == 1  # a Ray simulation already uses every core
    _, cells = plan(grid_dict(), engine="inprocess")
    assert {c.config.engine for c in cells} == {"inprocess"}
    assert [c.key for c in cells] == [c.key for c in ray_cells]  # same results, same cells
    assert default_parallelism(cells) == max(1, os.cpu_count() or 1)
    with pytest.raises(ConfigError, match="engine"):
        plan(grid_dict(), engine="spark")
