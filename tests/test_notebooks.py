"""The example notebooks execute headless (nbclient) and reach their stated results."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"

pytestmark = pytest.mark.simulation


def execute(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """Run a notebook in a fresh python3 kernel of this interpreter; its ``RESULT`` line."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # Results of notebook 01's grid go to a temporary directory, not the repository.
    monkeypatch.setenv("FLOWER_SUITE_NOTEBOOK_OUT", str(tmp_path))
    # The kernel must be this venv's Python whatever kernels Jupyter has installed.
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec_dir = tmp_path / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")], ensure_native_kernel=False)
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        f"{name} is committed with outputs"
    )
    client = nbclient.NotebookClient(
        notebook,
        km=KernelManager(kernel_name="python3", kernel_spec_manager=specs),
        timeout=600,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    nbformat.write(notebook, tmp_path / name)  # the executed copy, for a look on failure
    text = "\n".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream"
    )
    match = re.search(r"^RESULT (.*)$", text, re.MULTILINE)
    assert match, f"{name} printed no RESULT line:\n{text[-2000:]}"
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert images, f"{name} shows no plot"
    return {k: float(v) for k, v in (item.split("=") for item in match.group(1).split())}


def test_attack_vs_defense_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Notebook 01: the clean model learns digits; the black-box backdoor lands on FedAvg."""
    from flower_suite.simulations.config import ConfigError, load_config

    try:
        load_config(REPO / "experiments" / "digits_edge.toml")
    except ConfigError as err:
        pytest.skip(f"notebook 01 needs the [attack] config (experiments/digits_edge.toml): {err}")
    result = execute("01_attack_vs_defense_digits.ipynb", tmp_path, monkeypatch)
    assert result["clean_main"] > 0.8, result
    # A clean digits model labels 6-19% of the edge-case 7s as the target (spec section 9);
    # the seeded run is bitwise repeatable and measured 0.485 with the black-box attacker.
    assert result["attacked_backdoor"] > 0.3, result


def test_byzantine_robustness_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Notebook 02: reverse-gradient attackers break FedAvg, not the median or Krum."""
    result = execute("02_byzantine_robustness.ipynb", tmp_path, monkeypatch)
    assert result["clean"] > 0.8, result
    assert result["fedavg_attacked"] < 0.3, result
    assert result["median_attacked"] > 0.7, result
    assert result["krum_attacked"] > 0.7, result
