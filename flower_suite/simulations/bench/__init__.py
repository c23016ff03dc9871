"""The benchmark harness: a grid of experiments (axes x seeds) run cell by cell, resumable.

:mod:`~.grid` parses and validates grid files and expands them into cells, :mod:`~.runs`
runs the cells (resumable, optionally in parallel), :mod:`~.report` writes the CSV, table
and plots.

A grid file names a base experiment and axes of labelled overrides; every combination of one
entry per axis and one seed is a **cell**, i.e. one ``run_experiment``. Example::

    name = "digits-edge"                   # results go to <output>/<name>/ (default bench/)
    base = "experiments/digits_edge.toml"  # experiment TOML (relative to this file or the
                                           # working directory) or a preset name
    seeds = [0, 1, 2]                      # default: the base experiment's seed
    [set]                                  # dotted overrides applied to every cell
    rounds = 30
    [[axis.attack]]                        # an axis: entries with a label + dotted overrides
    label = "none"
    [[axis.attack]]
    label = "blackbox"
    "attack.name" = "edge_blackbox"
    [[axis.defense]]
    label = "ndc"
    "strategy.name" = "ndc"
    "strategy.max_norm" = 0.3
    [report]                               # optional, see report.ReportConfig
    last_rounds = 5                        # summary: mean over the last k rounds
    main = "test-acc"
    target = "backdoor-acc"

Overrides merge into the base experiment (a nested table is the same as its dotted keys), so
keyword arguments of the base strategy persist when an axis changes ``strategy.name``; keep
the base strategy plain. Every cell's config is validated before anything runs.

Layout of ``<output>/<name>/``::

    grid.toml            the grid as given (resolved base path)
    cells/<labels>-s<seed>-<hash>/
        cell.json        labels, seed, config hash
        config.toml      the cell's resolved experiment (re-runnable with `flower-suite run`)
        rows.jsonl       one JSON object per round, written as rounds end
        done             written last: the cell is finished (resume skips it)
        error.txt        when the cell failed
    results.csv          tidy: one row per cell x round (axis labels, seed, round, metrics)
    summary.md           final results: mean ± sd over seeds of the last-k-rounds average
    <metric>_vs_round.png, main_vs_target.png

Cells are keyed by a hash of their resolved config (less ``name``/``output_dir``): editing a
grid re-runs exactly the cells whose experiment changed.

Parallelism: each cell is a Ray simulation sized to every CPU of the machine, so by default
cells run one after another in this process. ``parallel=N`` runs up to N cells at once in
spawned worker processes (each with its own Ray instance): worth it only where one
simulation leaves cores idle (few clients on many cores); on 2 cores 1 is fastest.
"""

from flower_suite.simulations.bench.grid import (
    Axis,
    AxisEntry,
    BenchGrid,
    Cell,
    check_cells,
    config_hash,
    expand,
    load_grid,
    parse_grid,
)
from flower_suite.simulations.bench.report import ReportConfig, write_report
from flower_suite.simulations.bench.runs import (
    BenchResult,
    CellResult,
    ProgressEvent,
    is_done,
    plan,
    run_bench,
    run_cell,
)

# The former name of BenchGrid (a benchmark grid, not one of Flower's Grids).
Grid = BenchGrid

__all__ = [
    "Axis",
    "AxisEntry",
    "BenchGrid",
    "BenchResult",
    "Cell",
    "CellResult",
    "Grid",
    "ProgressEvent",
    "ReportConfig",
    "check_cells",
    "config_hash",
    "expand",
    "is_done",
    "load_grid",
    "parse_grid",
    "plan",
    "run_bench",
    "run_cell",
    "write_report",
]
