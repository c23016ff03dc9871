"""Every config error stops before Ray starts: exit 2, the field named, no traceback, within
seconds; ``run`` and ``bench`` agree on every case.

Measured before (issue "One declared contract per component"): strategy parameters out of
range, an NDC inner rule without its keywords, DETOX vote-group errors and Krum with f too
large for the sampled clients surfaced after Ray started (exit 1, a 66-line traceback, ~15 s);
``client.lr=inf`` trained into NaN; ``--set name=../../escaped`` wrote outside ``output_dir``.
"""

from __future__ import annotations

import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from flower_suite.simulations.bench import run_bench
from flower_suite.simulations.cli import main
from flower_suite.simulations.config import ConfigError

CASES = {
    "krum f < 0": (
        ["strategy.name=krum", "strategy.num_malicious_nodes=-1"],
        "num_malicious_nodes",
    ),
    "trimmed mean beta 0.7": (["strategy.name=fedtrimmedavg", "strategy.beta=0.7"], "beta"),
    "ndc inner rule without its keywords": (
        ["strategy.name=ndc", "strategy.aggregation='krum'"],
        "num_malicious_nodes",
    ),
    "detox nodes not a multiple of r": (
        ["num_clients=10", "strategy.name=detox", "strategy.redundancy=3"],
        "num_clients",
    ),
    "detox vote groups too small": (
        [
            "num_clients=9",
            "partition.num_partitions=3",
            "strategy.name=detox",
            "strategy.num_malicious_nodes=2",
            "strategy.num_vote_groups=3",
            "strategy.inner='multi_krum'",
        ],
        "strategy.num_vote_groups",
    ),
    "krum f too large for the sampled clients": (
        ["clients_per_round=5", "strategy.name=krum", "strategy.num_malicious_nodes=2"],
        "clients_per_round",
    ),
    "multikrum m above the sampled clients": (
        ["clients_per_round=5", "strategy.name=multikrum", "strategy.num_nodes_to_select=8"],
        "clients_per_round",
    ),
    "client lr inf": (["client.lr=inf"], "client.lr"),
    "client momentum nan": (["client.momentum=nan"], "client.momentum"),
    "strategy parameter inf": (
        ["strategy.name=signsgd", "strategy.server_learning_rate=inf"],
        "server_learning_rate",
    ),
    "name leaving the output directory": (["name='../../escaped'"], "name"),
    "more GPUs per client than the machine has": (["resources.num_gpus=64"], "resources.num_gpus"),
    "more CPUs per client than the machine has": (
        ["resources.num_cpus=4096"],
        "resources.num_cpus",
    ),
    "model that does not fit the data": (["model.name=lenet"], "model.name"),
    "secagg with too few sampled clients": (
        ["clients_per_round=2", "secagg.num_shares=2"],
        "secagg",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_run_exits_2_naming_the_field_within_seconds(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides, field = CASES[case]
    args = ["run", "digits_fedavg", "--output-dir", str(tmp_path)]
    for override in overrides:
        args += ["--set", override]
    start = time.perf_counter()
    code = main(args)
    elapsed = time.perf_counter() - start
    out = capsys.readouterr().out
    assert code == 2, out
    assert "config error:" in out and field in out, out
    assert elapsed < 5.0
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing escaped


def _toml(value: str) -> str:
    """A ``--set`` value as a TOML literal (bare words, as ``--set`` accepts, are quoted)."""
    try:
        tomllib.loads(f"x = {value}")
    except tomllib.TOMLDecodeError:
        return f'"{value}"'
    return value


@pytest.mark.parametrize("case", sorted(CASES))
def test_bench_refuses_the_same_cases_naming_the_same_field(case: str, tmp_path: Path) -> None:
    overrides, field = CASES[case]
    lines = ['name = "g"', 'base = "digits_fedavg"', "[set]"]
    lines += [f'"{key}" = {_toml(value)}' for key, value in (o.split("=", 1) for o in overrides)]
    grid = tmp_path / "grid.toml"
    grid.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        run_bench(grid, output_dir=tmp_path / "out", dry_run=True)


def test_unwritable_output_dir_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code = main(["run", "digits_fedavg", "--output-dir", str(blocker / "runs")])
    out = capsys.readouterr().out
    assert code == 2 and "output_dir: cannot create" in out, out


def test_a_fresh_process_exits_2_without_a_traceback() -> None:
    """The whole CLI, imports included: exit 2, one line naming the field, no traceback."""
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flower_suite.simulations.cli",
            "run",
            "digits_fedavg",
            "--set",
            "strategy.name=krum",
            "--set",
            "strategy.num_malicious_nodes=-1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.perf_counter() - start
    assert done.returncode == 2, done.stdout + done.stderr
    assert "strategy.num_malicious_nodes" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert "ray" not in (done.stdout + done.stderr).lower()
    print(f"fresh-process config error in {elapsed:.1f} s")
