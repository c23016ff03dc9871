"""Running a benchmark grid: cells one by one (or in worker processes), resumable.

:func:`run_bench` expands a grid (:mod:`~flower_suite.simulations.bench.grid`), skips the
cells whose ``done`` marker matches their config hash, runs the others with the engine's
``run_experiment`` (each streaming its rows to ``rows.jsonl``) and writes the report
(:mod:`~flower_suite.simulations.bench.report`). The file format and the output layout are
described in :mod:`flower_suite.simulations.bench`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from flower_suite.simulations.bench.grid import BenchGrid, Cell, check_cells, expand, load_grid
from flower_suite.simulations.bench.report import write_report
from flower_suite.simulations.config import ConfigError
from flower_suite.simulations.engine import runner

__all__ = [
    "BenchResult",
    "CellResult",
    "ProgressEvent",
    "cell_dir",
    "grid_output_dir",
    "is_done",
    "plan",
    "read_rows",
    "run_bench",
    "run_cell",
]


# --- Cell directories and resume --------------------------------------------------------------


def cell_dir(root: Path, cell: Cell) -> Path:
    return root / "cells" / cell.dir_name


def is_done(directory: Path, cell: Cell) -> bool:
    """Finished: the ``done`` marker exists and the stored hash is this cell's config hash."""
    marker = directory / "done"
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("key") == cell.key
    except (json.JSONDecodeError, AttributeError):
        return False


def read_rows(directory: Path) -> list[dict[str, Any]]:
    path = directory / "rows.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _start_cell_dir(directory: Path, cell: Cell) -> None:
    """A clean directory for a (re-)run: leftovers of an interrupted run are removed."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    info = {"labels": cell.label_dict, "seed": cell.seed, "key": cell.key}
    (directory / "cell.json").write_text(json.dumps(info, indent=2) + "\n")
    (directory / "config.toml").write_text(tomli_w.dumps(cell.config.to_dict()))


def run_cell(
    cell: Cell, directory: Path, on_round: Callable[[Mapping[str, Any]], None] | None = None
) -> tuple[list[dict[str, Any]], float]:
    """Run one cell into ``directory`` (rows streamed to ``rows.jsonl``, ``done`` last).

    Returns the rows and the wall time. Exceptions propagate after ``error.txt`` is written.
    """
    _start_cell_dir(directory, cell)
    start = time.perf_counter()
    with (directory / "rows.jsonl").open("w", encoding="utf-8") as fh:

        def log(row: Mapping[str, Any]) -> None:
            fh.write(json.dumps(dict(row)) + "\n")
            fh.flush()
            if on_round is not None:
                on_round(row)

        try:
            result = runner.run_experiment(cell.config, on_round=log, record=False, quiet=True)
        except BaseException:
            (directory / "error.txt").write_text(traceback.format_exc())
            raise
    wall = time.perf_counter() - start
    marker = {"key": cell.key, "wall_s": wall, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    (directory / "done").write_text(json.dumps(marker) + "\n")
    return result.rows, wall


def _run_cell_in_subprocess(cell: Cell, directory: str) -> tuple[list[dict[str, Any]], float]:
    """The ``--parallel`` worker (a spawned process; module-level so it pickles)."""
    return run_cell(cell, Path(directory))


# --- Running a grid ---------------------------------------------------------------------------


@dataclass
class CellResult:
    cell: Cell
    status: str  # "ran", "skipped" (finished earlier), "failed", "pending" (dry run)
    rows: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    error: str = ""
    directory: Path | None = None


@dataclass(frozen=True)
class ProgressEvent:
    """Reported to ``on_progress``: a cell started, finished, was skipped or failed."""

    cell: Cell
    total: int
    status: str  # "start", "queued" (--parallel), "done", "skipped", "failed"
    wall_s: float = 0.0
    final: Mapping[str, Any] = field(default_factory=dict)
    error: str = ""
    main: str = "test-acc"
    target: str = "backdoor-acc"

    def line(self) -> str:
        """``[3/24] attack=blackbox defense=ndc seed=1 ... 41 s, main 0.95 backdoor 0.41``."""
        head = f"[{self.cell.index}/{self.total}] {self.cell.describe()}"
        if self.status in ("start", "queued"):
            return f"{head} ..." + (" queued" if self.status == "queued" else "")
        if self.status == "skipped":
            return f"{head} ... finished earlier (skipped)"
        if self.status == "failed":
            return f"{head} ... FAILED after {self.wall_s:.0f} s: {self.error}"
        parts = [f"{self.wall_s:.0f} s"]
        for label, key in (("main", self.main), ("backdoor", self.target)):
            value = self.final.get(key)
            if isinstance(value, int | float):
                parts.append(f"{label} {value:.3f}")
        return f"{head} ... {', '.join(parts)}"


ProgressFn = Callable[[ProgressEvent], None]


@dataclass
class BenchResult:
    """What :func:`run_bench` returns: per-cell outcomes and the report files."""

    grid: BenchGrid
    output_dir: Path
    cells: list[CellResult]
    files: dict[str, Path] = field(default_factory=dict)  # "results", "summary", plots
    summary: list[dict[str, Any]] = field(default_factory=list)  # rows of summary.md

    @property
    def failed(self) -> list[CellResult]:
        return [c for c in self.cells if c.status == "failed"]

    def count(self, status: str) -> int:
        return sum(c.status == status for c in self.cells)


def grid_output_dir(grid: BenchGrid, output_dir: str | Path | None = None) -> Path:
    """``<output_dir or grid.output_dir>/<grid.name>``."""
    return Path(output_dir or grid.output_dir) / grid.name


def plan(
    grid_or_path: BenchGrid | str | Path | Mapping[str, Any],
    *,
    check: bool = True,
    engine: str | None = None,
) -> tuple[BenchGrid, list[Cell]]:
    """Load the grid and resolve every cell; with ``check`` also the pre-Ray input checks.
    ``engine`` ("ray" or "inprocess") overrides every cell's."""
    grid = grid_or_path if isinstance(grid_or_path, BenchGrid) else load_grid(grid_or_path)
    if engine is not None:
        grid = dataclasses.replace(grid, overrides={**grid.overrides, "engine": engine})
    cells = expand(grid)
    if check:
        check_cells(cells)
    return grid, cells


def default_parallelism(cells: Sequence[Cell]) -> int:
    """Workers for ``cells``: a core each for in-process cells (threads = their num_cpus),
    one for Ray cells (each Ray simulation sizes itself to the whole machine)."""
    if not cells or any(cell.config.engine != "inprocess" for cell in cells):
        return 1
    threads = max(1, int(max(cell.config.resources.num_cpus for cell in cells)))
    return max(1, (os.cpu_count() or 1) // threads)


def run_bench(
    grid_path_or_dict: BenchGrid | str | Path | Mapping[str, Any],
    *,
    output_dir: str | Path | None = None,
    parallel: int | None = None,
    resume: bool = True,
    on_progress: ProgressFn | None = None,
    dry_run: bool = False,
    engine: str | None = None,
) -> BenchResult:
    """Run every cell of a grid not finished earlier, then write the CSV, table and plots.

    Parameters
    ----------
    grid_path_or_dict : a grid TOML path, its parsed data, or a :class:`BenchGrid`.
    output_dir : parent of the grid's directory (default: the grid's ``output_dir``, "bench").
    parallel : cells run at once. 1 runs in this process; N > 1 runs cells in N spawned
        processes. ``None`` (the default): one worker per core when every cell runs on the
        in-process engine (each cell then uses ``resources.num_cpus`` threads), else 1 (a Ray
        simulation already uses every core).
    engine : "ray" or "inprocess" for every cell, overriding the configs' ``engine``.
    resume : skip cells whose ``done`` marker matches their config hash. ``False`` re-runs all.
    on_progress : called with a :class:`ProgressEvent` as cells start and end.
    dry_run : validate and list the cells (status "pending" or "skipped"); run nothing.

    Every cell's config is validated first: a bad one raises :class:`ConfigError` before any
    simulation starts. A cell that fails at run time is recorded (``error.txt``) and the
    others still run; see :attr:`BenchResult.failed`.
    """
    if parallel is not None and parallel < 1:
        raise ConfigError(f"parallel: must be >= 1, not {parallel}")
    grid, cells = plan(grid_path_or_dict, check=True, engine=engine)
    if parallel is None:
        parallel = default_parallelism(cells)
    root = grid_output_dir(grid, output_dir)
    total = len(cells)
    report = grid.report

    def emit(cell: Cell, status: str, **kw: Any) -> None:
        if on_progress is not None:
            on_progress(
                ProgressEvent(cell, total, status, main=report.main, target=report.target, **kw)
            )

    results, pending = _finished_earlier(cells, root, resume)
    if dry_run:
        for cell in pending:
            results[cell.index] = CellResult(cell, "pending", directory=cell_dir(root, cell))
        return BenchResult(grid, root, [results[c.index] for c in cells])

    root.mkdir(parents=True, exist_ok=True)
    # A record of what ran; a grid given as a dict may hold values TOML cannot write.
    with contextlib.suppress(TypeError, ValueError):
        (root / "grid.toml").write_text(tomli_w.dumps({**grid.raw, "base": grid.base}))
    for cell in cells:
        if cell.index in results:
            emit(cell, "skipped")
    if parallel == 1 or len(pending) <= 1:
        for cell in pending:
            results[cell.index] = _run_here(cell, cell_dir(root, cell), emit)
    else:
        results.update(_run_parallel(pending, root, parallel, emit))

    ordered = [results[c.index] for c in cells]
    finished = [r for r in ordered if r.status in ("ran", "skipped")]
    files, summary = write_report(
        root,
        grid.axis_names,
        [(r.cell.label_dict, r.cell.seed, r.cell.key, r.rows) for r in finished],
        report,
        title=grid.name,
    )
    return BenchResult(grid, root, ordered, files, summary)


def _finished_earlier(
    cells: Sequence[Cell], root: Path, resume: bool
) -> tuple[dict[int, CellResult], list[Cell]]:
    """The cells a previous run finished (with ``resume``), by index, and the others."""
    results: dict[int, CellResult] = {}
    pending: list[Cell] = []
    for cell in cells:
        directory = cell_dir(root, cell)
        if resume and is_done(directory, cell):
            results[cell.index] = CellResult(
                cell, "skipped", read_rows(directory), _done_wall(directory), "", directory
            )
        else:
            pending.append(cell)
    return results, pending


def _done_wall(directory: Path) -> float:
    try:
        return float(json.loads((directory / "done").read_text()).get("wall_s", 0.0))
    except (OSError, ValueError):
        return 0.0


def _run_here(cell: Cell, directory: Path, emit: Callable[..., None]) -> CellResult:
    emit(cell, "start")
    start = time.perf_counter()
    try:
        rows, wall = run_cell(cell, directory)
    except Exception as err:  # one failing cell must not stop the grid
        wall = time.perf_counter() - start
        emit(cell, "failed", wall_s=wall, error=str(err))
        return CellResult(cell, "failed", read_rows(directory), wall, str(err), directory)
    emit(cell, "done", wall_s=wall, final=rows[-1] if rows else {})
    return CellResult(cell, "ran", rows, wall, "", directory)


def _run_parallel(
    cells: Sequence[Cell], root: Path, workers: int, emit: Callable[..., None]
) -> Iterator[tuple[int, CellResult]]:
    import multiprocessing
    from concurrent.futures import as_completed

    # Spawn, not fork: a forked child would inherit this process's Ray/torch thread state.
    context = multiprocessing.get_context("spawn")
    started: dict[Future[tuple[list[dict[str, Any]], float]], tuple[Cell, float]] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for cell in cells:
            emit(cell, "queued")
            future = pool.submit(_run_cell_in_subprocess, cell, str(cell_dir(root, cell)))
            started[future] = (cell, time.perf_counter())
        for future in as_completed(started):
            cell, t0 = started[future]
            directory = cell_dir(root, cell)
            try:
                rows, wall = future.result()
            except Exception as err:
                wall = time.perf_counter() - t0
                emit(cell, "failed", wall_s=wall, error=str(err))
                yield (
                    cell.index,
                    CellResult(cell, "failed", read_rows(directory), wall, str(err), directory),
                )
                continue
            emit(cell, "done", wall_s=wall, final=rows[-1] if rows else {})
            yield cell.index, CellResult(cell, "ran", rows, wall, "", directory)
