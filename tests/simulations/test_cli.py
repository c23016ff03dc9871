"""The flower-suite CLI and `flwr run` of the package's app (both real simulations)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flower_suite.simulations.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_config_error_exits_2_before_ray(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad field stops with exit code 2 and the field name; Ray is never started."""
    import ray

    code = main(["run", "digits_fedavg", "--set", "strategy.name=krumm", "--no-record"])
    out = capsys.readouterr().out
    assert code == 2
    assert "strategy.name" in out and "krumm" in out
    assert not ray.is_initialized()


def test_missing_data_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """MNIST from a directory that does not exist is reported before any simulation."""
    missing = tmp_path / "no-mnist"
    code = main(
        ["run", "digits_fedavg", "--set", "data.dataset=mnist", "--set", f"data.path='{missing}'"]
    )
    assert code == 2
    assert "does not exist" in capsys.readouterr().out


def test_model_data_mismatch_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """LeNet (28x28) on 8x8 digits is caught by a dry forward pass."""
    code = main(["run", "digits_fedavg", "--set", "model.name=lenet", "--no-record"])
    assert code == 2
    assert "does not accept digits" in capsys.readouterr().out


def test_dry_run_prepares_and_summarizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``run --dry-run``: config loaded, data, model and strategy prepared, a summary printed,
    exit 0; nothing trained, no run directory written, Ray never started."""
    import ray

    code = main(
        ["run", "digits_fedavg", "--set", "rounds=3", "--set", "clients_per_round=4",
         "--set", "strategy.name=krum", "--set", "strategy.num_malicious_nodes=0",
         "--output-dir", str(tmp_path), "--dry-run"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "experiment: digits-fedavg" in out
    assert "dataset: digits (1,437 train / 360 test, 10 classes), partition iid" in out
    assert "model: digits_cnn, 38,282 parameters" in out  # the README's count
    assert "strategy: krum (num_malicious_nodes=0)" in out
    assert "clients: 10, 4 per round" in out
    assert "rounds: 3" in out
    assert list(tmp_path.iterdir()) == []
    assert not ray.is_initialized()


def test_demo_dry_run_and_lowrank_counts(capsys: pytest.CaptureFixture[str]) -> None:
    """``demo --dry-run`` is the demo preset; a ``[lowrank]`` experiment also reports the
    factorized model's size (the README's 11,530 for digits_cnn at rank ratio 0.25)."""
    assert main(["demo", "--dry-run"]) == 0
    assert "experiment: digits-fedavg" in capsys.readouterr().out
    experiment = str(REPO / "experiments" / "pufferfish_digits.toml")
    assert main(["run", experiment, "--dry-run"]) == 0
    assert "38,282 parameters; 11,530 after the low-rank switch" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["strategy.name=krumm"], "strategy.name"),  # the registry
        (["client.lr=inf"], "client.lr"),  # the config's own checks
        # the strategy contract, asked only by prepare: Krum needs n >= 2f + 3 sampled
        (["clients_per_round=5", "strategy.name=krum", "strategy.num_malicious_nodes=2"],
         "clients_per_round"),
    ],
)  # fmt: skip
def test_dry_run_config_errors_exit_2(
    overrides: list[str], field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dry run reports config errors like a run: exit 2, the field, no traceback."""
    argv = ["run", "digits_fedavg", "--dry-run"]
    for assignment in overrides:
        argv += ["--set", assignment]
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out.startswith(f"config error: {field}"), captured.out
    assert "Traceback" not in captured.out + captured.err


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    """`list` shows the registries."""
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "fedprox" in out and "resnet18" in out and "digits_fedavg" in out


def test_list_shows_digits_edge_in_a_fresh_process() -> None:
    """``digits_edge`` is registered where it is defined (importing flower_suite.attacks), not
    as a side effect of validating an [attack] config: a fresh ``list`` shows it."""
    out = subprocess.run(
        [sys.executable, "-m", "flower_suite.simulations.cli", "list"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    datasets = out.split("data sets:")[1].split("models:")[0]
    assert "digits_edge," in datasets


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """`flower-suite run digits_fedavg --set rounds=2` in-process; its metrics rows."""
    out = tmp_path_factory.mktemp("cli")
    assert main(["run", "digits_fedavg", "--set", "rounds=2", "--output-dir", str(out)]) == 0
    (run_dir,) = out.iterdir()
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.simulation
def test_cli_run_prints_table_and_learns(cli_run: list[dict]) -> None:
    """Two rounds of the demo preset: rows for rounds 0..2, accuracy rising."""
    assert [r["round"] for r in cli_run] == [0, 1, 2]
    assert cli_run[2]["test-acc"] > cli_run[0]["test-acc"] + 0.3


@pytest.mark.simulation
def test_flwr_run_matches_the_runner(cli_run: list[dict], tmp_path: Path) -> None:
    """`flwr run .` on a local simulation federation gives the runner's numbers exactly."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "FLOWER_SUITE_OUTPUT_DIR": str(tmp_path),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": "39391",
        "FLWR_LOCAL_CONTROL_API_PORT": "39393",
    }
    proc = subprocess.run(
        ["bash", "scripts/flwr_run_local.sh", "10", "rounds=2"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = tmp_path.iterdir()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2]
    for ours, theirs in zip(rows, cli_run, strict=True):
        assert ours["test-acc"] == theirs["test-acc"]
        assert ours["test-loss"] == pytest.approx(theirs["test-loss"], rel=1e-6)
