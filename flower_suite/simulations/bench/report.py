"""Reports of a benchmark grid: tidy CSV, Markdown summary table, plots.

Works on plain per-round rows (whatever metric keys they have), so it is testable without
Ray and does not care which hooks produced the metrics: a key missing from some rows is an
empty CSV cell and a "-" in the table.

The ``[report]`` table of a grid file::

    [report]
    last_rounds = 5             # a cell's final value: mean over its last k rounds (>= 1)
    main = "test-acc"           # the main-task accuracy
    target = "backdoor-acc"     # the attack's success metric (absent: scatter not drawn)
    metrics = ["test-acc", "backdoor-acc", "attacker-selected"]  # summary.md columns
    plot_metric = "backdoor-acc"  # the "vs round" plot (default: target if any row has it,
                                  # else main)
    panels = "attack"           # one subplot per label of this axis (default: the first
                                # axis when there are two or more); the other axes make lines
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flower_suite.simulations.config.errors import ConfigError

# Summary columns by default, where some row has them: main, target, then the selection
# rates and update norms the attack hooks record.
DEFAULT_EXTRA_METRICS = (
    "attacker-selected",
    "honest-edge-selected",
    "update-norm-mean",
    "update-norm-attacker",
)
_REPORT_KEYS = ("last_rounds", "main", "target", "metrics", "plot_metric", "panels")

# One finished cell as the report sees it: axis labels, seed, config hash, per-round rows.
CellRows = tuple[Mapping[str, str], int, str, Sequence[Mapping[str, Any]]]


@dataclass(frozen=True)
class ReportConfig:
    last_rounds: int = 1
    main: str = "test-acc"
    target: str = "backdoor-acc"
    metrics: tuple[str, ...] = ()  # empty: main, target and DEFAULT_EXTRA_METRICS present
    plot_metric: str = ""
    panels: str = ""  # an axis name; "" = the first axis when there are two or more


def parse_report(raw: Any, axis_names: Sequence[str]) -> ReportConfig:
    """Validate the ``[report]`` table (errors name ``report.<field>``)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"report: expected a table, got {raw!r}")
    for key in raw:
        if key not in _REPORT_KEYS:
            raise ConfigError(f"report.{key}: unknown field (known: {', '.join(_REPORT_KEYS)})")
    k = raw.get("last_rounds", 1)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"report.last_rounds: expected an integer >= 1, got {k!r}")
    for key in ("main", "target", "plot_metric", "panels"):
        if key in raw and not isinstance(raw[key], str):
            raise ConfigError(f"report.{key}: expected a string, got {raw[key]!r}")
    metrics = raw.get("metrics", [])
    if not isinstance(metrics, list) or not all(isinstance(m, str) and m for m in metrics):
        raise ConfigError(f"report.metrics: expected a list of metric names, got {metrics!r}")
    panels = raw.get("panels", "")
    if panels and panels not in axis_names:
        raise ConfigError(
            f"report.panels: {panels!r} is not an axis (axes: {', '.join(axis_names) or 'none'})"
        )
    return ReportConfig(
        last_rounds=k,
        main=raw.get("main", "test-acc") or "test-acc",
        target=raw.get("target", "backdoor-acc"),
        metrics=tuple(metrics),
        plot_metric=raw.get("plot_metric", ""),
        panels=panels,
    )


# --- Tidy rows and CSV ------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else float(value)


def tidy_rows(axis_names: Sequence[str], cells: Sequence[CellRows]) -> list[dict[str, Any]]:
    """One dict per cell x round: axis labels, ``seed``, ``cell`` (hash prefix), ``round``,
    then every metric of the row (lists and dicts as compact JSON text)."""
    out: list[dict[str, Any]] = []
    for labels, seed, key, rows in cells:
        for row in rows:
            tidy: dict[str, Any] = {name: labels.get(name, "") for name in axis_names}
            tidy.update(seed=seed, cell=key[:10], round=row.get("round"))
            for metric, value in row.items():
                if metric == "round":
                    continue
                if isinstance(value, list | tuple | dict):
                    value = json.dumps(value, separators=(",", ":"))
                tidy[metric] = value
            out.append(tidy)
    return out


def write_tidy_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Columns in first-appearance order; a metric a row lacks is an empty cell."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


# --- Final values and the summary table -------------------------------------------------------


def final_value(rows: Sequence[Mapping[str, Any]], metric: str, last_rounds: int) -> float | None:
    """Mean of ``metric`` over the last ``last_rounds`` training rounds (round 0, the initial
    model, counts only when there is nothing else); ``None`` if those rows lack it."""
    ordered = sorted(rows, key=lambda r: r.get("round", 0))
    trained = [r for r in ordered if r.get("round", 0) > 0] or ordered
    values = [v for r in trained[-last_rounds:] if (v := _number(r.get(metric))) is not None]
    return sum(values) / len(values) if values else None


def summary_metrics(report: ReportConfig, cells: Sequence[CellRows]) -> list[str]:
    """The summary columns: ``report.metrics``, or main/target/extras that some row has."""
    if report.metrics:
        return list(report.metrics)
    present = {k for _, _, _, rows in cells for row in rows for k in row}
    wanted = (report.main, report.target, *DEFAULT_EXTRA_METRICS)
    return [m for m in dict.fromkeys(wanted) if m in present]


def summarize(
    axis_names: Sequence[str], cells: Sequence[CellRows], report: ReportConfig
) -> list[dict[str, Any]]:
    """One row per combination of axis labels (grid order): ``seeds`` (how many finished),
    and for every summary metric its mean and ``<metric>-sd`` over seeds of the cells'
    final values (sd 0 with one seed; ``None`` where no cell has the metric)."""
    metrics = summary_metrics(report, cells)
    groups: dict[tuple[str, ...], list[CellRows]] = {}
    for cell in cells:
        groups.setdefault(tuple(cell[0].get(a, "") for a in axis_names), []).append(cell)
    out: list[dict[str, Any]] = []
    for labels, members in groups.items():
        row: dict[str, Any] = dict(zip(axis_names, labels, strict=True))
        row["seeds"] = len(members)
        for metric in [*metrics, "elapsed-s"]:
            # elapsed-s: the run's wall time, from the last row (not a last-k average).
            k = 1 if metric == "elapsed-s" else report.last_rounds
            values = [v for c in members if (v := final_value(c[3], metric, k)) is not None]
            row[metric] = statistics.fmean(values) if values else None
            row[f"{metric}-sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out.append(row)
    return out


def _fmt(value: float | None, sd: float | None = None) -> str:
    if value is None:
        return "-"
    digits = 3 if abs(value) < 10 else 1
    text = f"{value:.{digits}f}"
    return f"{text} ± {sd:.{digits}f}" if sd is not None else text


def markdown_table(
    axis_names: Sequence[str],
    summary: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    *,
    title: str = "",
    last_rounds: int = 1,
) -> str:
    """``summary.md``: a title, how values were computed, and the table."""
    header = [*axis_names, "seeds", *metrics, "time (s)"]
    lines = []
    if title:
        lines += [f"# {title}", ""]
    window = "the final round" if last_rounds == 1 else f"the last {last_rounds} rounds"
    lines += [
        f"Mean ± sd over seeds of each cell's average over {window}; time is one run's wall "
        "time. `-`: no round recorded the metric.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i < len(axis_names) else "---:" for i in range(len(header))) + "|",
    ]
    for row in summary:
        multi = row["seeds"] > 1
        cells = [str(row[a]) for a in axis_names] + [str(row["seeds"])]
        for metric in metrics:
            cells.append(_fmt(row.get(metric), row.get(f"{metric}-sd") if multi else None))
        elapsed = row.get("elapsed-s")
        cells.append("-" if elapsed is None else f"{elapsed:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- Plots ------------------------------------------------------------------------------------


def _panel_axis(axis_names: Sequence[str], report: ReportConfig) -> str:
    if report.panels:
        return report.panels
    return axis_names[0] if len(axis_names) >= 2 else ""


def _line_label(labels: Mapping[str, str], axis_names: Sequence[str], panel: str) -> str:
    return "/".join(labels[a] for a in axis_names if a != panel) or "all"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def plot_metric_vs_round(
    path: Path,
    axis_names: Sequence[str],
    cells: Sequence[CellRows],
    metric: str,
    report: ReportConfig,
    title: str = "",
) -> None:
    """``metric`` per round: one panel per label of the panel axis, one line per label of the
    other axes (mean over seeds, band from min to max)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panel_axis = _panel_axis(axis_names, report)
    panels: dict[str, dict[str, dict[int, list[float]]]] = {}
    for labels, _, _, rows in cells:
        panel = labels.get(panel_axis, "") if panel_axis else ""
        line = panels.setdefault(panel, {}).setdefault(
            _line_label(labels, axis_names, panel_axis), {}
        )
        for row in rows:
            if (v := _number(row.get(metric))) is not None:
                line.setdefault(int(row["round"]), []).append(v)
    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), sharey=True, squeeze=False)
    for ax, (panel, lines) in zip(axes[0], panels.items(), strict=False):
        for label, by_round in lines.items():
            if not by_round:
                continue
            xs = sorted(by_round)
            mean = [statistics.fmean(by_round[x]) for x in xs]
            (handle,) = ax.plot(xs, mean, marker="o", ms=2.5, label=label)
            lows = [min(by_round[x]) for x in xs]
            highs = [max(by_round[x]) for x in xs]
            if lows != highs:
                ax.fill_between(xs, lows, highs, color=handle.get_color(), alpha=0.15)
        ax.set_title(f"{panel_axis}={panel}" if panel_axis else (title or metric))
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    axes[0][0].set_ylabel(metric)
    if metric.endswith("-acc"):
        axes[0][0].set_ylim(0, 1.02)
    if title and panel_axis:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_main_vs_target(
    path: Path,
    axis_names: Sequence[str],
    summary: Sequence[Mapping[str, Any]],
    report: ReportConfig,
    title: str = "",
) -> None:
    """Final main accuracy (x) against final target metric (y), one point per combination
    of labels (mean over seeds, sd error bars): colour by line label, marker by panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panel_axis = _panel_axis(axis_names, report)
    markers = "osD^vP*Xh<>"
    panel_labels = list(dict.fromkeys(str(r.get(panel_axis, "")) for r in summary))
    fig, ax = plt.subplots(figsize=(6, 4.5))
    colours: dict[str, Any] = {}
    for row in summary:
        x, y = row.get(report.main), row.get(report.target)
        if x is None or y is None:
            continue
        labels = {a: str(row[a]) for a in axis_names}
        line = _line_label(labels, axis_names, panel_axis)
        panel = labels.get(panel_axis, "") if panel_axis else ""
        marker = markers[panel_labels.index(panel) % len(markers)]
        colour = colours.get(line)
        container = ax.errorbar(
            x,
            y,
            xerr=row.get(f"{report.main}-sd") or None,
            yerr=row.get(f"{report.target}-sd") or None,
            fmt=marker,
            color=colour,
            ms=7,
            capsize=2,
            label=line if colour is None else None,
        )
        colours.setdefault(line, container.lines[0].get_color())
    if panel_axis:
        # Marker legend (grey) next to the colour legend.
        for i, panel in enumerate(panel_labels):
            ax.plot([], [], markers[i % len(markers)], color="grey", label=f"{panel_axis}={panel}")
    ax.set_xlabel(f"final {report.main}")
    ax.set_ylabel(f"final {report.target}")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- Everything -------------------------------------------------------------------------------


def write_report(
    root: Path,
    axis_names: Sequence[str],
    cells: Sequence[CellRows],
    report: ReportConfig,
    title: str = "",
) -> tuple[dict[str, Path], list[dict[str, Any]]]:
    """Write ``results.csv``, ``summary.md`` and the plots under ``root``.

    Returns the files written (keys ``results``, ``summary``, ``plot_rounds``,
    ``plot_scatter``) and the summary rows. With no finished cell only the (empty) CSV and
    table are written.
    """
    root.mkdir(parents=True, exist_ok=True)
    title = title or root.name
    files: dict[str, Path] = {}
    files["results"] = root / "results.csv"
    write_tidy_csv(files["results"], tidy_rows(axis_names, cells))
    summary = summarize(axis_names, cells, report)
    metrics = summary_metrics(report, cells)
    files["summary"] = root / "summary.md"
    files["summary"].write_text(
        markdown_table(axis_names, summary, metrics, title=title, last_rounds=report.last_rounds)
    )
    present = {k for _, _, _, rows in cells for row in rows for k in row}
    metric = report.plot_metric or (report.target if report.target in present else report.main)
    if metric in present:
        files["plot_rounds"] = root / f"{_safe(metric)}_vs_round.png"
        plot_metric_vs_round(files["plot_rounds"], axis_names, cells, metric, report, title)
    if report.main in present and report.target in present:
        files["plot_scatter"] = root / "main_vs_target.png"
        plot_main_vs_target(files["plot_scatter"], axis_names, summary, report, title)
    return files, summary
