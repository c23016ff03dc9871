"""From TOML to a validated :class:`ExperimentConfig`: parsing, ``--set`` overrides, presets.

Each section is checked against its dataclass (unknown fields and wrong types name the field),
overrides are applied to the parsed TOML before that, and :func:`~flower_suite.simulations.
config.validation.validate` runs last. A name without a file is looked up among the packaged
presets (``flower_suite/simulations/presets/*.toml``).
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from flower_suite.simulations.config.attack import AttackConfig
from flower_suite.simulations.config.backend import RayConfig
from flower_suite.simulations.config.compression import CompressionConfig
from flower_suite.simulations.config.errors import ConfigError
from flower_suite.simulations.config.experiment import ExperimentConfig
from flower_suite.simulations.config.sections import (
    ClientConfig,
    DataConfig,
    LowRankConfig,
    NamedConfig,
    PartitionConfig,
    ResourcesConfig,
)
from flower_suite.simulations.config.validation import validate

__all__ = [
    "PRESETS_DIR",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "parse_override",
    "presets",
    "resolve_experiment",
    "set_value",
]

_SECTIONS = {
    "data": DataConfig,
    "partition": PartitionConfig,
    "client": ClientConfig,
    "resources": ResourcesConfig,
    "lowrank": LowRankConfig,
    "attack": AttackConfig,
    "compression": CompressionConfig,
    "ray": RayConfig,
}
_NAMED = ("model", "strategy")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a simple annotation (int, float, str, bool)."""
    hint = annotation if isinstance(annotation, type) else None
    if isinstance(annotation, str):
        hint = {"int": int, "float": float, "str": str, "bool": bool}.get(annotation)
    if hint is None or isinstance(annotation, types.UnionType):
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (hint is int and isinstance(value, bool)) or not isinstance(value, hint):
        raise ConfigError(
            f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def _build_section(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a table, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown field (known: {', '.join(sorted(known))})")
    values = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in raw.items()}
    try:
        return cls(**values)
    except ConfigError:  # already names its field
        raise
    except ValueError as err:  # a section that checks its own ranges names the field first
        raise ConfigError(f"{where}.{err}") from err


def _build_named(raw: Any, where: str) -> NamedConfig:
    if isinstance(raw, str):
        return NamedConfig(raw)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a table with a name, got {raw!r}")
    if "name" not in raw or not isinstance(raw["name"], str):
        raise ConfigError(f"{where}.name: missing (the registered {where} to use)")
    kwargs = {k: v for k, v in raw.items() if k != "name"}
    return NamedConfig(raw["name"], kwargs)


def config_from_dict(raw: Mapping[str, Any]) -> ExperimentConfig:
    """Build and validate an :class:`ExperimentConfig` from parsed TOML."""
    hints = typing.get_type_hints(ExperimentConfig)
    values: dict[str, Any] = {}
    known = {f.name for f in dataclasses.fields(ExperimentConfig)}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{key}: unknown field (known: {', '.join(sorted(known))})")
        if key in _SECTIONS:
            values[key] = _build_section(_SECTIONS[key], value, key)
        elif key == "secagg":
            if not isinstance(value, Mapping):
                raise ConfigError(f"secagg: expected a table, got {type(value).__name__}")
            values[key] = dict(value)
        elif key in _NAMED:
            values[key] = _build_named(value, key)
        else:
            values[key] = _coerce(value, hints[key], key)
    config = ExperimentConfig(**values)
    validate(config)
    return config


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """``"client.lr=0.1"`` -> (["client", "lr"], 0.1); values are TOML, bare words strings."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key=value")
    key, text = assignment.split("=", 1)
    path = [part.strip() for part in key.split(".")]
    if not all(path):
        raise ConfigError(f"--set {assignment!r}: empty key")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    return path, value


def set_value(raw: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``raw[path[0]][path[1]]... = value`` in place, creating tables as needed."""
    node = raw
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if isinstance(child, str):  # `model = "mlp"` shorthand becomes a table
            child = node[part] = {"name": child}
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(path)}: {part} is not a table")
        node = child
    node[path[-1]] = value


def apply_overrides(
    raw: dict[str, Any],
    assignments: Iterable[str] = (),
    values: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Apply ``--set`` assignments and dotted ``values`` to parsed TOML (a new dict)."""
    out = copy.deepcopy(raw)
    for assignment in assignments:
        path, value = parse_override(assignment)
        set_value(out, path, value)
    for key, value in (values or {}).items():
        set_value(out, key.split("."), value)
    return out


# The packaged experiments: flower_suite/simulations/presets/*.toml.
PRESETS_DIR = Path(__file__).parents[1] / "presets"


def presets() -> list[str]:
    """Names of the experiments shipped with the package (usable instead of a path)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def resolve_experiment(name_or_path: str | Path) -> Path:
    """A path to an existing TOML file, or the name of a packaged preset."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = PRESETS_DIR / f"{name_or_path}.toml"
    if preset.is_file():
        return preset
    raise ConfigError(
        f"experiment file {path} not found (and no preset of that name; presets: "
        f"{', '.join(presets())})"
    )


def load_config(
    path: str | Path,
    overrides: Iterable[str] = (),
    values: Mapping[str, Any] | None = None,
) -> ExperimentConfig:
    """Read an experiment TOML file (or preset), apply overrides, validate.

    ``overrides`` are ``--set`` strings (``"client.lr=0.1"``); ``values`` are already-typed
    dotted keys (``{"client.lr": 0.1}``), as Flower's ``run_config`` delivers them.
    """
    path = resolve_experiment(path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from err
    return config_from_dict(apply_overrides(raw, overrides, values))
