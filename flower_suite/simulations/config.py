"""The experiment config: one TOML file, typed and validated before anything runs.

Schema (every field optional except where a default cannot be guessed; see
``experiments/digits_fedavg.toml`` for a full example)::

    name, seed, rounds, num_clients, clients_per_round, evaluate_clients, output_dir
    [data]       dataset, path, test_fraction
    [partition]  scheme, alpha, classes_per_client, min_partition_size, num_partitions
    [model]      name, <model keyword arguments>
    [strategy]   name, <strategy keyword arguments>
    [client]     local_epochs, lr, lr_decay, momentum, weight_decay, batch_size, proximal_mu
    [resources]  num_cpus, num_gpus
    [lowrank]    rank_ratio, warmup_rounds, keep_full_rank, keep_first_and_last, lr_factor
    [attack]     name, attackers, num_attackers, pattern, every_k, start_round, edge_set, ...
                 (see :class:`flower_suite.simulations.attack_config.AttackConfig`)

Every error is a :class:`ConfigError` whose message starts with the dotted field name.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flower_suite.data.partition import SCHEMES
from flower_suite.registry import RegistryError
from flower_suite.simulations.attack_config import AttackConfig, validate_attack


class ConfigError(ValueError):
    """An experiment config that cannot run; the message names the field."""


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"
    path: str = ""  # local directory for file-based data sets (MNIST IDX)
    test_fraction: float = 0.2  # hold-out for data sets published without a test split


@dataclass(frozen=True)
class PartitionConfig:
    scheme: str = "iid"
    alpha: float = 0.5
    classes_per_client: int = 2
    min_partition_size: int = 1
    # Data partitions; 0 = one per client. Fewer partitions than clients means clients
    # share data: client i trains on partition i mod num_partitions unless the strategy
    # assigns one (DETOX assigns each node group one partition).
    num_partitions: int = 0


@dataclass(frozen=True)
class ClientConfig:
    local_epochs: int = 1
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 32
    proximal_mu: float = 0.0
    # lr_t = lr * lr_decay ** t in round t (the edge-case papers' 0.998^t); 1 = constant.
    lr_decay: float = 1.0


@dataclass(frozen=True)
class ResourcesConfig:
    num_cpus: float = 1.0
    num_gpus: float = 0.0


@dataclass(frozen=True)
class LowRankConfig:
    """PUFFERFISH in federated training: ``warmup_rounds`` full-rank rounds, then factors.

    ``rank_ratio = 0`` (the default) trains the full-rank model throughout.
    """

    rank_ratio: float = 0.0
    warmup_rounds: int = 1
    keep_full_rank: tuple[str, ...] = ()  # module names kept full-rank (plus first/last)
    keep_first_and_last: bool = True
    lr_factor: float = 1.0  # client lr multiplier after the switch

    def __post_init__(self) -> None:
        keep = self.keep_full_rank
        if isinstance(keep, str) or not all(isinstance(name, str) for name in keep):
            raise ConfigError(
                f"lowrank.keep_full_rank: expected a list of module names, got {keep!r}"
            )
        object.__setattr__(self, "keep_full_rank", tuple(keep))

    @property
    def enabled(self) -> bool:
        return self.rank_ratio > 0


@dataclass(frozen=True)
class NamedConfig:
    """A registry name plus the keyword arguments passed to its factory."""

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    seed: int = 0
    rounds: int = 10
    num_clients: int = 10
    clients_per_round: int = 0  # 0 = every client, every round
    evaluate_clients: int = 0  # clients doing federated evaluation per round; 0 = none
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    model: NamedConfig = field(default_factory=lambda: NamedConfig("digits_cnn"))
    strategy: NamedConfig = field(default_factory=lambda: NamedConfig("fedavg"))
    client: ClientConfig = field(default_factory=ClientConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    lowrank: LowRankConfig = field(default_factory=LowRankConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    # Secure aggregation: SecAggPlus keywords (num_shares, reconstruction_threshold,
    # clipping_range, ...); an empty table (the default) means plain aggregation.
    secagg: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sampled_clients(self) -> int:
        return self.clients_per_round or self.num_clients

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain TOML-able data (named sections flattened)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, NamedConfig):
                out[f.name] = {"name": value.name, **dict(value.kwargs)}
            elif dataclasses.is_dataclass(value):
                out[f.name] = dataclasses.asdict(value)
            elif isinstance(value, Mapping):
                out[f.name] = dict(value)
            else:
                out[f.name] = value
        return out


_SECTIONS = {
    "data": DataConfig,
    "partition": PartitionConfig,
    "client": ClientConfig,
    "resources": ResourcesConfig,
    "lowrank": LowRankConfig,
    "attack": AttackConfig,
}
_NAMED = ("model", "strategy")
# Strategy parameters the runner derives from clients_per_round / evaluate_clients.
_DERIVED_STRATEGY_KEYS = (
    "fraction_train",
    "fraction_evaluate",
    "min_train_nodes",
    "min_evaluate_nodes",
    "min_available_nodes",
)


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
    return cls(**{k: _coerce(v, hints[k], f"{where}.{k}") for k, v in raw.items()})


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


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def validate(config: ExperimentConfig) -> None:
    """Value checks across fields, and that every registry name and keyword resolves."""
    from flower_suite.data.registry import DATASETS
    from flower_suite.models import MODELS
    from flower_suite.simulations.attack_config import register_edge_datasets
    from flower_suite.strategies import STRATEGIES

    register_edge_datasets()

    _check(config.rounds >= 1, f"rounds: must be >= 1, not {config.rounds}")
    _check(config.num_clients >= 1, f"num_clients: must be >= 1, not {config.num_clients}")
    _check(
        0 <= config.clients_per_round <= config.num_clients,
        f"clients_per_round: must be in [0, num_clients={config.num_clients}], "
        f"not {config.clients_per_round}",
    )
    _check(
        0 <= config.evaluate_clients <= config.num_clients,
        f"evaluate_clients: must be in [0, num_clients={config.num_clients}], "
        f"not {config.evaluate_clients}",
    )
    _check(config.seed >= 0, f"seed: must be >= 0, not {config.seed}")
    _check(
        config.partition.scheme in SCHEMES,
        f"partition.scheme: must be one of {SCHEMES}, not {config.partition.scheme!r}",
    )
    _check(
        0 <= config.partition.num_partitions <= config.num_clients,
        f"partition.num_partitions: must be in [0, num_clients={config.num_clients}], "
        f"not {config.partition.num_partitions}",
    )
    _check(
        config.partition.alpha > 0, f"partition.alpha: must be > 0, not {config.partition.alpha}"
    )
    _check(
        config.partition.classes_per_client >= 1,
        f"partition.classes_per_client: must be >= 1, not {config.partition.classes_per_client}",
    )
    _check(
        0 < config.data.test_fraction < 1,
        f"data.test_fraction: must be in (0, 1), not {config.data.test_fraction}",
    )
    _check(
        config.resources.num_cpus > 0,
        f"resources.num_cpus: must be > 0, not {config.resources.num_cpus}",
    )
    _check(
        config.resources.num_gpus >= 0,
        f"resources.num_gpus: must be >= 0, not {config.resources.num_gpus}",
    )
    lowrank = config.lowrank
    _check(
        0 <= lowrank.rank_ratio <= 1,
        f"lowrank.rank_ratio: must be in (0, 1] (0 = full-rank training), not {lowrank.rank_ratio}",
    )
    _check(lowrank.lr_factor > 0, f"lowrank.lr_factor: must be > 0, not {lowrank.lr_factor}")
    if lowrank.enabled:
        _check(
            0 <= lowrank.warmup_rounds < config.rounds,
            f"lowrank.warmup_rounds: must be in [0, rounds={config.rounds}) so that the model "
            f"is factorized during the run, not {lowrank.warmup_rounds}",
        )
    from flower_suite.training import TrainConfig

    client = dataclasses.asdict(config.client)
    lr_decay = client.pop("lr_decay")
    try:
        TrainConfig(**client)
    except ValueError as err:
        raise ConfigError(f"client.{err}") from err
    _check(0 < lr_decay <= 1, f"client.lr_decay: must be in (0, 1], not {lr_decay}")

    for where, registry, named in (
        ("model", MODELS, config.model),
        ("strategy", STRATEGIES, config.strategy),
    ):
        try:
            registry.get(named.name)
            registry.check_kwargs(named.name, named.kwargs, field=where)
        except RegistryError as err:
            message = str(err)
            raise ConfigError(
                message if message.startswith(where) else f"{where}.name: {message}"
            ) from err
    for key in _DERIVED_STRATEGY_KEYS:
        _check(
            key not in config.strategy.kwargs,
            f"strategy.{key}: set by the runner from clients_per_round/evaluate_clients; "
            "set those instead",
        )
    try:
        DATASETS.get(config.data.dataset)
    except RegistryError as err:
        raise ConfigError(f"data.dataset: {err}") from err
    validate_attack(config)
    from flower_suite.simulations.secagg_config import validate_secagg

    validate_secagg(config)


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
    import copy

    out = copy.deepcopy(raw)
    for assignment in assignments:
        path, value = parse_override(assignment)
        set_value(out, path, value)
    for key, value in (values or {}).items():
        set_value(out, key.split("."), value)
    return out


PRESETS_DIR = Path(__file__).parent / "presets"


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
