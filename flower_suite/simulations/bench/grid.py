"""Benchmark grids: the grid file schema, its validation, and the cells it expands to.

A grid (:class:`BenchGrid`) names a base experiment and axes of labelled overrides; every
combination of one entry per axis and one seed is a **cell**, one experiment. See
:mod:`flower_suite.simulations.bench` for the file format and
:mod:`~flower_suite.simulations.bench.runs` for running it. Every error is a
:class:`ConfigError` naming the field (``axis.defense[2].label: missing``) or the cell and
field (``cell defense=ndc seed=0: strategy.max_norm: ...``).

Cells are keyed by a SHA-256 of their resolved config (less ``name``/``output_dir``), so an
edited grid re-runs exactly the cells whose experiment changed.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import logging
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flower_suite.simulations.bench.report import ReportConfig, parse_report
from flower_suite.simulations.config import (
    ConfigError,
    ExperimentConfig,
    load_config,
    resolve_experiment,
)
from flower_suite.simulations.engine.runner import check_strategy, prepare
from flower_suite.simulations.engine.task import ExperimentTask

DEFAULT_OUTPUT = "bench"
_TOP_KEYS = ("name", "base", "seeds", "output_dir", "set", "axis", "report")
# Column names of the tidy CSV that an axis must not shadow.
RESERVED_AXIS_NAMES = ("seed", "round", "cell", "status")
# Fields the harness owns: the seed comes from `seeds`, the name and output dir per cell.
_OWNED_FIELDS = ("seed", "name", "output_dir")
# Not part of a cell's identity: they do not change what the experiment computes.
# Fields that do not change a cell's results: where it ran (both engines give the same rows,
# tests/simulations/test_runner_e2e.py), so a grid resumes across engines and clusters.
_UNHASHED_FIELDS = ("name", "output_dir", "engine", "watchdog_s", "ray")
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


# --- The grid ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AxisEntry:
    """One value of an axis: a label and the dotted overrides it applies."""

    label: str
    overrides: Mapping[str, Any]


@dataclass(frozen=True)
class Axis:
    name: str
    entries: tuple[AxisEntry, ...]

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.entries]


@dataclass(frozen=True)
class BenchGrid:
    """A parsed, validated grid file (cells not yet resolved; see :func:`expand`)."""

    name: str
    base: str  # a resolved path, or a preset name
    seeds: tuple[int, ...]
    overrides: Mapping[str, Any]  # the [set] table, dotted
    axes: tuple[Axis, ...]
    report: ReportConfig
    output_dir: str = DEFAULT_OUTPUT
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def axis_names(self) -> list[str]:
        return [a.name for a in self.axes]

    @property
    def size(self) -> int:
        n = len(self.seeds)
        for axis in self.axes:
            n *= len(axis.entries)
        return n


@dataclass(frozen=True)
class Cell:
    """One experiment of the grid: a label per axis, a seed and its resolved config."""

    index: int  # 1-based position in the grid
    labels: tuple[tuple[str, str], ...]  # (axis name, label) in axis order
    seed: int
    overrides: Mapping[str, Any]
    config: ExperimentConfig
    key: str  # hash of the resolved config (see `config_hash`)

    @property
    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)

    def describe(self) -> str:
        """``attack=blackbox defense=ndc seed=1``."""
        return " ".join([*(f"{a}={v}" for a, v in self.labels), f"seed={self.seed}"])

    @property
    def dir_name(self) -> str:
        # Labels make the directory readable; the hash makes it unique to the config.
        slug = "-".join(label for _, label in self.labels)
        return f"{slug + '-' if slug else ''}s{self.seed}-{self.key[:10]}"


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"client": {"lr": 0.1}, "strategy.name": "krum"}`` -> dotted keys to leaf values."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _check_owned(overrides: Mapping[str, Any], where: str) -> None:
    for key in overrides:
        if key in _OWNED_FIELDS:
            hint = "list seeds in the top-level `seeds`" if key == "seed" else "set per cell"
            raise ConfigError(f"{where}.{key}: set by the bench harness ({hint})")


def _resolve_base(base: str, grid_dir: Path | None) -> str:
    """An existing file (relative to the grid file first, then the working dir) or a preset."""
    candidates = [Path(base)]
    if grid_dir is not None and not Path(base).is_absolute():
        candidates.insert(0, grid_dir / base)
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate.resolve())
    try:
        return str(resolve_experiment(base))
    except ConfigError as err:
        raise ConfigError(f"base: {err}") from err


def _parse_axis(name: str, raw: Any) -> Axis:
    where = f"axis.{name}"
    if not _NAME_RE.match(name):
        raise ConfigError(f"{where}: axis names are identifiers (letters, digits, _ and -)")
    if name in RESERVED_AXIS_NAMES:
        raise ConfigError(f"{where}: {name!r} is reserved (a results.csv column)")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(
            f"{where}: expected a non-empty array of tables ([[{where}]] entries with a label)"
        )
    entries: list[AxisEntry] = []
    for i, entry in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{at}: expected a table, got {entry!r}")
        label = entry.get("label")
        if not isinstance(label, str) or not label:
            raise ConfigError(f"{at}.label: missing (a short name for this value, e.g. 'krum')")
        if not _LABEL_RE.match(label):
            raise ConfigError(
                f"{at}.label: {label!r} must start with a letter or digit and use only "
                "letters, digits, '_', '.', '+', '-'"
            )
        if label in (e.label for e in entries):
            raise ConfigError(f"{at}.label: {label!r} appears twice in {where}")
        overrides = _flatten({k: v for k, v in entry.items() if k != "label"})
        _check_owned(overrides, at)
        entries.append(AxisEntry(label, overrides))
    return Axis(name, tuple(entries))


def parse_grid(raw: Mapping[str, Any], *, grid_dir: Path | None = None) -> BenchGrid:
    """Validate a parsed grid (TOML data); errors are :class:`ConfigError` naming the field."""
    for key in raw:
        if key not in _TOP_KEYS:
            raise ConfigError(f"{key}: unknown field (known: {', '.join(_TOP_KEYS)})")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(
            f"name: expected the grid's name (letters, digits, _ and -; it names the output "
            f"directory), got {name!r}"
        )
    base = raw.get("base")
    if not isinstance(base, str) or not base:
        raise ConfigError("base: missing (an experiment TOML path or a preset name)")
    base = _resolve_base(base, grid_dir)
    seeds_raw = raw.get("seeds")
    if seeds_raw is None:
        seeds: tuple[int, ...] = (load_config(base).seed,)
    else:
        if not isinstance(seeds_raw, list) or not seeds_raw:
            raise ConfigError(f"seeds: expected a non-empty list of integers, got {seeds_raw!r}")
        for s in seeds_raw:
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                raise ConfigError(f"seeds: expected integers >= 0, got {s!r}")
        if len(set(seeds_raw)) != len(seeds_raw):
            raise ConfigError(f"seeds: repeated seed in {seeds_raw}")
        seeds = tuple(seeds_raw)
    output_dir = raw.get("output_dir", DEFAULT_OUTPUT)
    if not isinstance(output_dir, str) or not output_dir:
        raise ConfigError(f"output_dir: expected a directory path, got {output_dir!r}")
    set_raw = raw.get("set", {})
    if not isinstance(set_raw, Mapping):
        raise ConfigError(f"set: expected a table of overrides, got {set_raw!r}")
    overrides = _flatten(set_raw)
    _check_owned(overrides, "set")
    axes_raw = raw.get("axis", {})
    if not isinstance(axes_raw, Mapping):
        raise ConfigError("axis: expected [[axis.<name>]] tables")
    axes = tuple(_parse_axis(axis_name, entries) for axis_name, entries in axes_raw.items())
    # Two axes setting the same field would make one silently win over the other.
    for a, b in itertools.combinations(axes, 2):
        keys_a = {k for e in a.entries for k in e.overrides}
        keys_b = {k for e in b.entries for k in e.overrides}
        if shared := sorted(keys_a & keys_b):
            raise ConfigError(
                f"axis.{b.name}: sets {', '.join(shared)}, which axis.{a.name} also sets"
            )
    report = parse_report(raw.get("report", {}), [a.name for a in axes])
    return BenchGrid(name, base, seeds, overrides, axes, report, output_dir, dict(raw))


def load_grid(path_or_dict: str | Path | Mapping[str, Any]) -> BenchGrid:
    """Read and validate a grid TOML file (or already-parsed data)."""
    if isinstance(path_or_dict, Mapping):
        return parse_grid(path_or_dict)
    path = Path(path_or_dict)
    if not path.is_file():
        raise ConfigError(f"grid file {path} not found")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from err
    return parse_grid(raw, grid_dir=path.parent)


def config_hash(config: ExperimentConfig) -> str:
    """SHA-256 of the resolved config (less name/output_dir and where it ran), canonical JSON.

    Sections left at their defaults are left out, so a release that adds a section (with a
    default that changes nothing) keeps every finished cell's hash: a grid resumes across it.
    """
    defaults = ExperimentConfig().to_dict()
    resolved = {
        k: v
        for k, v in config.to_dict().items()
        if k not in _UNHASHED_FIELDS and not (isinstance(v, dict) and v == defaults.get(k))
    }
    text = json.dumps(resolved, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def expand(grid: BenchGrid) -> list[Cell]:
    """Every cell (axes in file order, seeds innermost), each config loaded and validated.

    A cell whose config fails raises a :class:`ConfigError` naming the cell and the field.
    """
    cells: list[Cell] = []
    combos = itertools.product(*(axis.entries for axis in grid.axes))
    for entries, seed in itertools.product(list(combos), grid.seeds):
        labels = tuple((axis.name, e.label) for axis, e in zip(grid.axes, entries, strict=True))
        overrides: dict[str, Any] = dict(grid.overrides)
        for e in entries:
            overrides.update(e.overrides)
        slug = "-".join(label for _, label in labels)
        values = {
            **overrides,
            "seed": seed,
            # labels may hold any text; a run name must stay one path component
            "name": re.sub(
                r"[^A-Za-z0-9._-]+", "-", f"{grid.name}-{slug + '-' if slug else ''}s{seed}"
            ),
        }
        describe = " ".join([*(f"{a}={v}" for a, v in labels), f"seed={seed}"])
        try:
            config = load_config(grid.base, values=copy.deepcopy(values))
        except ConfigError as err:
            raise ConfigError(f"cell {describe}: {err}") from err
        cells.append(Cell(len(cells) + 1, labels, seed, overrides, config, config_hash(config)))
    return cells


@contextlib.contextmanager
def _flwr_log_level(level: int) -> Iterator[None]:
    """Flower's logger at ``level`` for the block (its notices would repeat once per cell)."""
    logger = logging.getLogger("flwr")
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def check_cells(cells: Sequence[Cell]) -> None:
    """What ``flower-suite run`` checks before Ray, and that every strategy can be built
    with its keyword values (registry checks cover only the names).

    The data/partition/model check (the engine's ``prepare``) loads data, which can take seconds:
    it runs once per distinct setup, ignoring the fields that vary cheaply between cells
    (seed, strategy, rounds, attack), whose values ``load_config`` has already validated.
    """
    prepared: dict[str, ExperimentTask] = {}
    ignored = ("seed", "strategy", "rounds", "attack", *_UNHASHED_FIELDS)
    with _flwr_log_level(logging.ERROR):
        for cell in cells:
            setup = {k: v for k, v in cell.config.to_dict().items() if k not in ignored}
            setup_key = json.dumps(setup, sort_keys=True, default=str)
            try:
                if setup_key not in prepared:  # prepare checks this cell's strategy too
                    prepared[setup_key] = prepare(cell.config)
                else:  # same setup, maybe another strategy: what `run` would check
                    check_strategy(cell.config, prepared[setup_key])
            except (ConfigError, FileNotFoundError, ValueError, TypeError) as err:
                raise ConfigError(f"cell {cell.describe()}: {err}") from err
