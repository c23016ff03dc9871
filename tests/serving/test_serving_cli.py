"""``python -m flower_suite.serving``: a saved run directory served end to end, and bad input
refused with exit status 2 before Ray starts."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import ray
import torch
from serving_models import trained_digits_model

from flower_suite.serving.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory as the simulation runner writes it: config.toml and model.pt."""
    model, _ = trained_digits_model()
    path = tmp_path_factory.mktemp("run")
    torch.save(model.state_dict(), path / "model.pt")
    (path / "config.toml").write_text('[data]\ndataset = "digits"\n\n[model]\nname = "mlp"\n')
    return path


def test_serves_a_run_directory_and_reports_accuracy_and_latency(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: Ray started by the CLI itself, with a short RAY_TMPDIR
    ray_tmp = tempfile.mkdtemp(prefix="fs-ray-", dir="/tmp")
    os.environ["RAY_TMPDIR"] = ray_tmp
    try:
        # Execute
        code = main([str(run_dir / "model.pt"), "-K", "2", "-S", "1", "--limit", "40"])
    finally:
        os.environ.pop("RAY_TMPDIR", None)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    # Assert
    out = capsys.readouterr().out
    assert code == 0, out
    report = dict(line.split(":", 1) for line in out.strip().splitlines())
    report = {k.strip(): v.strip() for k, v in report.items()}
    assert report["dataset"] == "digits" and report["N"] == "3" and report["queries"] == "40"
    assert float(report["base_accuracy"]) >= 0.9
    assert 0.5 <= float(report["coded_accuracy"]) <= 1.0
    assert float(report["latency_p99_ms"]) >= float(report["latency_p50_ms"]) > 0
    assert not ray.is_initialized()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.pt"], "does not exist"),
        (["{run}/model.pt", "-K", "0"], "K"),
        (["{run}/model.pt", "-K", "4", "-N", "4", "-S", "1"], "need N >= 5"),
        (["{run}/model.pt", "--model", "no_such_model"], "no_such_model"),
        (["{run}/model.pt", "--model", "lenet"], "not a state_dict"),
        (["{run}/model.pt", "--dataset", "no_such_data"], "no_such_data"),
    ],
)
def test_bad_input_exits_2_with_the_reason(
    run_dir: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main([a.format(run=run_dir) for a in args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not ray.is_initialized()


def test_without_a_config_the_model_name_is_required(
    tmp_path: Path, run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(run_dir / "model.pt", tmp_path / "model.pt")
    assert main([str(tmp_path / "model.pt")]) == 2
    assert "--model" in capsys.readouterr().err
