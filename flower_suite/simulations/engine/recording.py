"""The run directory: resolved config, per-round metrics (JSON lines and CSV), model, plot.

Layout of ``<output_dir>/<name>-<timestamp>/``::

    config.toml      the resolved experiment (re-runnable with `flower-suite run`)
    partitions.txt   per-client label histogram
    metrics.jsonl    one JSON object per round, written as the round ends
    metrics.csv      the same rows as a table, written at the end
    model.pt         the final global model's state_dict
    summary.json     final metrics, wall time, versions
    plot.png         accuracy and loss per round
"""

from __future__ import annotations

import csv
import json
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
import torch
from torch import nn

from flower_suite.simulations.config.errors import ConfigError


def unique_run_dir(output_dir: str | Path, name: str) -> Path:
    """A fresh directory ``<output_dir>/<name>-<timestamp>[-k]`` (never reuses one).

    Raises :class:`ConfigError` (field ``output_dir`` or ``name``) when the directory cannot
    be created or would not lie inside ``output_dir``; the runner calls this before Ray starts.
    """
    root = Path(output_dir)
    base = root / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if base.resolve().parent != root.resolve():
        raise ConfigError(f"name: {name!r} would write the run outside output_dir {str(root)!r}")
    candidate, k = base, 1
    while candidate.exists():
        candidate = base.with_name(f"{base.name}-{k}")
        k += 1
    try:
        candidate.mkdir(parents=True)
    except OSError as err:
        raise ConfigError(f"output_dir: cannot create {str(candidate)!r}: {err}") from err
    return candidate


class RunRecorder:
    """Writes one run directory; each method is safe to call as the run progresses."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._jsonl = (run_dir / "metrics.jsonl").open("a", encoding="utf-8")

    @classmethod
    def create(cls, output_dir: str | Path, name: str) -> RunRecorder:
        return cls(unique_run_dir(output_dir, name))

    def write_config(self, resolved: Mapping[str, Any]) -> None:
        (self.run_dir / "config.toml").write_text(tomli_w.dumps(dict(resolved)))

    def write_partitions(self, table: str) -> None:
        (self.run_dir / "partitions.txt").write_text(table + "\n")

    def write_placements(self, placements: Mapping[int, Mapping[str, str]]) -> None:
        """``placement.csv``: where each client that replied ran (host, pid, Ray node)."""
        rows = [{"partition": p, **placements[p]} for p in sorted(placements)]
        write_csv(self.run_dir / "placement.csv", rows)

    def log_round(self, row: Mapping[str, Any]) -> None:
        self._jsonl.write(json.dumps(dict(row)) + "\n")
        self._jsonl.flush()

    def finish(
        self,
        rows: Sequence[Mapping[str, Any]],
        model: nn.Module | None,
        summary: Mapping[str, Any],
    ) -> None:
        self._jsonl.close()
        write_csv(self.run_dir / "metrics.csv", rows)
        if model is not None:
            torch.save(model.state_dict(), self.run_dir / "model.pt")
        info = {
            **dict(summary),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "flwr": _version("flwr"),
        }
        (self.run_dir / "summary.json").write_text(json.dumps(info, indent=2) + "\n")
        if rows:
            plot_rounds(rows, self.run_dir / "plot.png", title=str(summary.get("name", "")))


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows with possibly different keys -> one CSV (missing cells empty)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def plot_rounds(rows: Sequence[Mapping[str, Any]], path: Path, title: str = "") -> None:
    """Accuracy (left) and loss (right) per round for every ``*-acc`` / ``*-loss`` series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    keys = sorted({k for row in rows for k in row})
    for key in keys:
        # Only scalar accuracy/loss series are plotted; rows also hold lists (selected node
        # ids of robust strategies) and counters.
        if not key.endswith(("-acc", "-loss")):
            continue
        points = [
            (r["round"], r[key])
            for r in rows
            if isinstance(r.get(key), int | float) and not isinstance(r.get(key), bool)
        ]
        if not points:
            continue
        xs, ys = np.array(points, dtype=float).T
        if key.endswith("-acc"):
            ax_acc.plot(xs, ys, marker="o", ms=3, label=key)
        elif key.endswith("-loss"):
            ax_loss.plot(xs, ys, marker="o", ms=3, label=key)
    for ax, label in ((ax_acc, "accuracy"), (ax_loss, "loss")):
        ax.set_xlabel("round")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    ax_acc.set_ylim(0, 1)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
