"""Experiment config: parsing, overrides, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from flower_suite.simulations.config import (
    ConfigError,
    config_from_dict,
    load_config,
    parse_override,
    presets,
)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return path


def test_defaults_and_preset_load() -> None:
    """The demo preset loads by name and has the documented values."""
    config = load_config("digits_fedavg")
    assert "digits_fedavg" in presets()
    assert config.num_clients == 10 and config.sampled_clients == 10
    assert config.model.name == "digits_cnn" and config.strategy.name == "fedavg"
    assert config.client.lr == pytest.approx(0.1)


def test_full_file_round_trips_through_to_dict(tmp_path: Path) -> None:
    """Every section parses; to_dict gives back the same values (int widened to float)."""
    path = _write(
        tmp_path,
        """
name = "x"
seed = 3
rounds = 4
num_clients = 6
clients_per_round = 3
[data]
dataset = "digits"
[partition]
scheme = "dirichlet"
alpha = 1
[model]
name = "mlp"
hidden = [32, 16]
[strategy]
name = "fedprox"
proximal_mu = 0.1
[client]
lr = 0.2
batch_size = 8
[resources]
num_cpus = 1
num_gpus = 0.5
""",
    )
    config = load_config(path)
    assert config.partition.alpha == 1.0 and isinstance(config.partition.alpha, float)
    assert dict(config.model.kwargs) == {"hidden": [32, 16]}
    assert dict(config.strategy.kwargs) == {"proximal_mu": 0.1}
    assert config.resources.num_gpus == 0.5
    again = config_from_dict(config.to_dict())
    assert again == config


def test_overrides_are_typed(tmp_path: Path) -> None:
    """--set values parse as TOML (numbers, lists), bare words as strings."""
    config = load_config(
        "digits_fedavg",
        ["rounds=2", "client.lr=0.01", "model.name=mlp", "model.hidden=[8]", "name=quick"],
    )
    assert config.rounds == 2 and config.client.lr == 0.01
    assert config.model.name == "mlp" and dict(config.model.kwargs) == {"hidden": [8]}
    assert config.name == "quick"
    assert parse_override("a.b=true") == (["a", "b"], True)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["strategy.name=krumm"], "strategy.name"),
        (["model.name=resnet"], "model.name"),
        (["data.dataset=imagenet"], "data.dataset"),
        (["client.lr=-1"], "client.lr"),
        (["client.batch_size=0"], "client.batch_size"),
        (["client.lr='fast'"], "client.lr"),
        (["rounds=0"], "rounds"),
        (["clients_per_round=11"], "clients_per_round"),
        (["evaluate_clients=-1"], "evaluate_clients"),
        (["partition.scheme=random"], "partition.scheme"),
        (["partition.alpha=0"], "partition.alpha"),
        (["resources.num_cpus=0"], "resources.num_cpus"),
        (["resources.num_gpus=-0.5"], "resources.num_gpus"),
        (["client.learning_rate=0.1"], "client.learning_rate"),
        (["epochs=3"], "epochs"),
        (["strategy.proximal_mu=0.1"], "strategy.proximal_mu"),  # FedAvg has no mu
        (["strategy.fraction_train=0.5"], "strategy.fraction_train"),
        (["model.hidden=[8]"], "model.hidden"),  # digits_cnn has no `hidden`
        (["seed=-1"], "seed"),
    ],
)
def test_errors_name_the_field(overrides: list[str], field: str) -> None:
    """Each bad value stops with a ConfigError whose message starts with the field."""
    with pytest.raises(ConfigError) as info:
        load_config("digits_fedavg", overrides)
    assert str(info.value).startswith(field), str(info.value)


def test_unknown_strategy_suggests_close_name() -> None:
    """A typo gets a suggestion."""
    with pytest.raises(ConfigError, match="did you mean fedavg"):
        load_config("digits_fedavg", ["strategy.name=fedavgg"])


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    """A missing file or broken TOML is a ConfigError, not a traceback from tomllib."""
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(_write(tmp_path, "rounds = = 3"))


def test_missing_named_section_name(tmp_path: Path) -> None:
    """A [strategy] table without name says so."""
    with pytest.raises(ConfigError, match=r"^strategy\.name: missing"):
        load_config(_write(tmp_path, "[strategy]\nproximal_mu = 0.1\n"))


def test_override_into_non_table_is_refused() -> None:
    """--set rounds.x=1 cannot treat an integer as a table."""
    with pytest.raises(ConfigError, match="not a table"):
        load_config("digits_fedavg", ["rounds.x=1"])


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[2].glob("experiments/*.toml")))
def test_example_experiments_are_valid(path: Path) -> None:
    """Every shipped example config loads and validates."""
    config = load_config(path)
    assert config.rounds >= 1
