"""``flower-suite``: run experiments from TOML files, and the README's demo.

flower-suite run EXPERIMENT [--set key=value ...] [--engine ray|inprocess] [--output-dir DIR]
                            [--no-record] [--dry-run]
flower-suite demo [--set key=value ...] [--engine ray|inprocess] [--output-dir DIR] [--no-record]
                  [--dry-run]
flower-suite list
flower-suite bench GRID.toml [--output DIR] [--parallel N] [--engine ray|inprocess] [--no-resume]
                             [--dry-run]

EXPERIMENT is a TOML file or a packaged preset name (``flower-suite list``). ``run --dry-run``
does everything ``run`` checks before Ray starts (``prepare``: config, strategy with its
wrappers and contract, data, partitions, model), prints a summary and exits 0. A config error
exits 2 with ``config error: <field>: ...`` and no traceback, with or without ``--dry-run``;
a Ray that cannot start or attach, or a failed engine, exits 3 with ``backend error: ...``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flower_suite.data.registry import DATASETS
from flower_suite.models import MODELS, count_parameters
from flower_suite.simulations.bench import ProgressEvent, run_bench
from flower_suite.simulations.config import (
    ENGINES,
    ConfigError,
    ExperimentConfig,
    load_config,
    presets,
)
from flower_suite.simulations.config.backend import ray_address
from flower_suite.simulations.engine.runner import BackendError, prepare, run_experiment
from flower_suite.simulations.engine.task import ExperimentTask
from flower_suite.strategies import STRATEGIES

DEMO_PRESET = "digits_fedavg"
_COLUMNS = ("test-acc", "test-loss", "train-loss", "client-eval-acc", "bytes-sent", "elapsed-s")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flower-suite", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("run", "run an experiment TOML file (or a packaged preset name)"),
        ("demo", "FedAvg on the built-in digits data: per-round table and plot"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        if name == "run":
            cmd.add_argument("experiment", help="path to an experiment TOML file, or a preset")
        cmd.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config field, e.g. --set client.lr=0.1 (repeatable)",
        )
        cmd.add_argument("--output-dir", default=None, help="where run directories go")
        cmd.add_argument("--no-record", action="store_true", help="do not write a run directory")
        cmd.add_argument("--verbose", action="store_true", help="show Flower's INFO logs")
        _add_engine_option(cmd)
        cmd.add_argument(
            "--dry-run",
            action="store_true",
            help="load the data, check the model and build the strategy (everything `run` "
            "checks before Ray starts), print a summary and exit; nothing is trained or written",
        )
    sub.add_parser("list", help="list presets, data sets, models and strategies")

    bench = sub.add_parser(
        "bench", help="run a grid of experiments (axes x seeds): resumable, CSV, table, plots"
    )
    bench.add_argument("grid", help="path to a grid TOML file (see flower_suite.simulations.bench)")
    bench.add_argument(
        "--output", default=None, metavar="DIR", help="results go to DIR/<grid name>/ (bench)"
    )
    bench.add_argument(
        "--parallel",
        type=int,
        default=None,
        metavar="N",
        help="cells run at once in separate processes (default: one per core when every cell "
        "runs in-process, else 1: each Ray simulation already uses every CPU)",
    )
    bench.add_argument(
        "--no-resume", action="store_true", help="re-run cells that finished earlier"
    )
    bench.add_argument("--dry-run", action="store_true", help="validate and list the cells")
    _add_engine_option(bench)
    return parser


def _add_engine_option(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--engine",
        choices=ENGINES,
        default=None,
        help="where clients run: 'ray' (Flower's simulation engine) or 'inprocess' (no Ray; "
        "fastest for small experiments); overrides the config's engine",
    )


def round_table(rows: Sequence[Mapping[str, Any]], title: str = "") -> Table:
    """The per-round metrics as a rich table (columns present in the rows only)."""
    columns = [c for c in _COLUMNS if any(c in r for r in rows)]
    table = Table(title=title or None)
    table.add_column("round", justify="right")
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            if value is None:
                cells.append("")
            elif column.startswith("bytes"):
                cells.append(f"{value / 1e6:.2f} MB")
            else:
                cells.append(f"{value:.4f}" if column != "elapsed-s" else f"{value:.1f}")
        table.add_row(str(row["round"]), *cells)
    return table


def _run(task: ExperimentTask, args: argparse.Namespace, console: Console) -> int:
    config = task.config
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("round {task.completed}/{task.total}"),
        TextColumn("{task.fields[metric]}"),
        TimeElapsedColumn(),
        console=console,
    )
    with progress:
        bar = progress.add_task(config.name, total=config.rounds, metric="")

        def on_round(row: Mapping[str, Any]) -> None:
            metric = f"acc {row['test-acc']:.3f}" if "test-acc" in row else ""
            progress.update(bar, completed=row["round"], metric=metric)

        result = run_experiment(
            config,
            on_round=on_round,
            output_dir=args.output_dir,
            record=not args.no_record,
            quiet=not args.verbose,
            prepared=task,
        )
    console.print(round_table(result.rows, title=config.name))
    if result.run_dir is not None:
        console.print(f"run directory: {result.run_dir} (plot: {result.run_dir / 'plot.png'})")
    return 0


def _kwargs(kwargs: Mapping[str, Any]) -> str:
    return f" ({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})" if kwargs else ""


def dry_run_summary(task: ExperimentTask) -> list[str]:
    """What ``--dry-run`` prints: the experiment as ``prepare`` resolved it, one line a field."""
    config = task.config
    train, test = task.data()
    model = task.build_model(seed=0)
    params = f"{count_parameters(model):,} parameters"
    spec = task.lowrank_spec
    if spec is not None:
        low = count_parameters(spec.apply(model, svd_init=False))  # the structure suffices
        params += (
            f"; {low:,} after the low-rank switch (rank ratio {spec.rank_ratio}, "
            f"{config.lowrank.warmup_rounds} warm-up rounds)"
        )
    per_round = f"{config.sampled_clients} per round"
    if config.evaluate_clients:
        per_round += f", {config.evaluate_clients} evaluating"
    lines = [
        f"experiment: {config.name} (seed {config.seed})",
        f"dataset: {config.data.dataset} ({len(train):,} train / {len(test):,} test, "
        f"{test.num_classes} classes), partition {config.partition.scheme}",
        f"model: {config.model.name}{_kwargs(config.model.kwargs)}, {params}",
        f"strategy: {config.strategy.name}{_kwargs(config.strategy.kwargs)}",
        f"clients: {config.num_clients}, {per_round}",
        f"rounds: {config.rounds}",
    ]
    plan = task.threat_plan()
    if plan is not None:
        lines.append(f"attack: {plan.attack.name}, attacker partitions {list(plan.attackers)}")
    if config.secagg_enabled:
        lines.append(f"secagg:{_kwargs(config.secagg)}")
    if config.compression.enabled:
        feedback = ", error feedback" if config.compression.error_feedback else ""
        compressor = f"{config.compression.name}{_kwargs(config.compression.kwargs())}"
        lines.append(f"compression: {compressor}{feedback}")
    lines.append(_where_line(config))
    if config.resources.num_gpus:
        note = "" if torch.cuda.is_available() else " (torch sees no CUDA device on this machine)"
        lines.append(f"resources: {config.resources.num_gpus} GPU per client{note}")
    return lines


def _where_line(config: ExperimentConfig) -> str:
    """Where the clients will run: the engine and, on Ray, which Ray."""
    if config.engine == "inprocess":
        return "engine: inprocess (every client in this process, no Ray)"
    address = ray_address(config.ray)
    ray = f"the Ray cluster at {address}" if address else "a local Ray started for the run"
    return f"engine: ray ({ray}; watchdog {config.watchdog_s:g} s)"


def _list(console: Console) -> int:
    for title, names in (
        ("presets", presets()),
        ("data sets", sorted(DATASETS)),
        ("models", sorted(MODELS)),
        ("strategies", sorted(STRATEGIES)),
    ):
        console.print(f"[bold]{title}[/bold]: {', '.join(names)}")
    return 0


def _bench(args: argparse.Namespace, console: Console) -> int:
    def on_progress(event: ProgressEvent) -> None:
        style = {"failed": "red", "skipped": "dim", "done": "green"}.get(event.status, "")
        line = event.line()
        console.print(
            f"[{style}]{line}[/{style}]" if style else line, highlight=False, soft_wrap=True
        )

    try:
        result = run_bench(
            args.grid,
            output_dir=args.output,
            parallel=args.parallel,
            resume=not args.no_resume,
            on_progress=on_progress,
            dry_run=args.dry_run,
            engine=args.engine,
        )
    except (ConfigError, FileNotFoundError, ValueError) as err:
        console.print(
            f"[red]config error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True
        )
        return 2
    if args.dry_run:
        total = len(result.cells)
        for cell in result.cells:
            note = "finished (skipped)" if cell.status == "skipped" else "to run"
            console.print(
                f"[{cell.cell.index}/{total}] {cell.cell.describe()}  {note}  -> {cell.directory}",
                highlight=False,
                soft_wrap=True,
            )
        console.print(
            f"{result.count('pending')} to run, {result.count('skipped')} finished earlier; "
            f"output: {result.output_dir}"
        )
        return 0
    console.print(
        f"{result.count('ran')} ran, {result.count('skipped')} skipped, "
        f"{len(result.failed)} failed; output: {result.output_dir}",
        highlight=False,
    )
    if "summary" in result.files:
        console.print(
            result.files["summary"].read_text(), highlight=False, markup=False, soft_wrap=True
        )
    for failed in result.failed:
        console.print(
            f"[red]failed:[/red] {failed.cell.describe()} (see {failed.directory}/error.txt)",
            highlight=False,
        )
    return 1 if result.failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console()
    if args.command == "list":
        return _list(console)
    if args.command == "bench":
        return _bench(args, console)
    experiment = DEMO_PRESET if args.command == "demo" else args.experiment
    overrides = [*args.overrides, *([f"engine={args.engine}"] if args.engine else [])]
    try:
        config = load_config(experiment, overrides)
        # data, partitions, model shape, strategy and its contract: fail before Ray starts
        task = prepare(config)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        console.print(
            f"[red]config error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True
        )
        return 2
    if args.dry_run:
        for line in dry_run_summary(task):
            console.print(line, highlight=False, markup=False, soft_wrap=True)
        console.print("dry run: the config is valid; nothing was run", highlight=False)
        return 0
    try:
        return _run(task, args, console)
    except ConfigError as err:  # e.g. an unwritable output_dir, a cluster too small
        console.print(
            f"[red]config error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True
        )
        return 2
    except BackendError as err:  # Ray could not start or attach, or its engine failed
        console.print(
            f"[red]backend error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True
        )
        return 3


if __name__ == "__main__":
    sys.exit(main())
