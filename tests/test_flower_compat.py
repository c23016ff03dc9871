"""``flower_suite.flower_compat`` against the installed Flower.

Each test pins one Flower internal the compat module relies on (its name, signature and the
behaviour we use), so a Flower release that renames or changes it fails here, by name, rather
than deep inside a strategy or a simulation. The last test keeps the rest of the package on
Flower's public API.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import logging
import random
import typing
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

import flower_suite
from flower_suite import flower_compat
from flower_suite.flower_compat import (
    CLIENT_APP_RAISED_EXCEPTION,
    ClientAppCallable,
    Mod,
    NodeInfo,
    Run,
    aggregate_metricrecords,
    empty_run,
    log_strategy_start_info,
    message_identity,
    sample_nodes,
    set_source_node,
)

# --- message_identity: flwr.supercore.task_identity.TaskIdentity ------------------------------


def _raw_identity() -> tuple[int | None, int | None, int | None]:
    return TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id


@pytest.fixture
def unset_identity() -> Iterator[None]:
    """TaskIdentity as a fresh process has it (unset), whatever earlier tests left."""
    saved = _raw_identity()
    TaskIdentity._run_id = TaskIdentity._node_id = TaskIdentity._task_id = None
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def _instruction() -> Message:
    return Message(RecordDict(), dst_node_id=5, message_type="train", group_id="1")


def test_task_identity_storage_is_the_private_class_attributes(unset_identity: None) -> None:
    # message_identity saves and restores these three attributes, None meaning unset.
    assert _raw_identity() == (None, None, None)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 4, 5, 6
    assert _raw_identity() == (4, 5, 6)
    assert (TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id) == (4, 5, 6)


def test_message_needs_a_task_identity_outside_a_run(unset_identity: None) -> None:
    # The reason message_identity exists: if this stops raising, it may be dropped.
    with pytest.raises(RuntimeError, match="TaskIdentity"):
        _instruction()


def test_message_identity_stamps_messages_and_restores_unset(unset_identity: None) -> None:
    with message_identity(run_id=7, node_id=3, task_id=11):
        metadata = _instruction().metadata
    assert (metadata.run_id, metadata.src_node_id, metadata.src_task_id) == (7, 3, 11)
    assert _raw_identity() == (None, None, None)
    with pytest.raises(RuntimeError):
        _ = TaskIdentity.run_id


def test_message_identity_restores_a_set_identity_after_an_error(unset_identity: None) -> None:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 40, 41, 42
    with pytest.raises(ValueError), message_identity():
        assert _instruction().metadata.run_id == 1
        raise ValueError
    assert _raw_identity() == (40, 41, 42)


def test_set_source_node_changes_only_the_sender(task_identity: None) -> None:
    # Metadata.src_node_id has no setter; set_source_node writes the attribute its getter reads.
    message = _instruction()
    before = {k: v for k, v in vars(message.metadata).items() if k != "_src_node_id"}
    assert set_source_node(message, 77) is message
    assert message.metadata.src_node_id == 77
    assert {k: v for k, v in vars(message.metadata).items() if k != "_src_node_id"} == before


# --- sample_nodes, aggregate_metricrecords: flwr.serverapp.strategy.strategy_utils -----------


def _flower_util(name: str) -> Callable[..., object]:
    module = importlib.import_module("flwr.serverapp.strategy.strategy_utils")
    return typing.cast(Callable[..., object], getattr(module, name))


def test_strategy_utils_signatures() -> None:
    assert list(inspect.signature(_flower_util("sample_nodes")).parameters) == [
        "grid",
        "min_available_nodes",
        "sample_size",
    ]
    assert list(inspect.signature(_flower_util("aggregate_metricrecords")).parameters) == [
        "records",
        "weighting_metric_name",
    ]
    assert list(inspect.signature(_flower_util("log_strategy_start_info")).parameters) == [
        "num_rounds",
        "arrays",
        "train_config",
        "evaluate_config",
    ]


class _NodesGrid(Grid):
    """Only ``get_node_ids``: what ``sample_nodes`` reads."""

    def __init__(self, nodes: list[int]) -> None:
        self.nodes = nodes

    @property
    def run(self) -> Run:
        return empty_run(1)

    def set_run(self, run: Run) -> None:
        raise NotImplementedError

    def create_message(self, *args: object, **kwargs: object) -> Message:
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        raise NotImplementedError


def test_sample_nodes_samples_without_replacement_from_all_nodes() -> None:
    grid = _NodesGrid([11, 12, 13, 14, 15])
    sampled, all_nodes = sample_nodes(grid, 2, 3)
    assert all_nodes == [11, 12, 13, 14, 15]
    assert len(sampled) == len(set(sampled)) == 3
    assert set(sampled) <= set(all_nodes)


def test_sample_nodes_draws_from_the_random_module() -> None:
    # Strategies seed `random` for reproducible sampling; this is what makes that work.
    grid = _NodesGrid(list(range(100, 120)))
    random.seed(3)
    first, _ = sample_nodes(grid, 0, 5)
    random.seed(3)
    again, _ = sample_nodes(grid, 0, 5)
    assert first == again


def test_log_strategy_start_info_logs_to_flwr(caplog: pytest.LogCaptureFixture) -> None:
    arrays = ArrayRecord({"w": Array(np.zeros(4, dtype=np.float32))})
    with caplog.at_level(logging.INFO, logger="flwr"):
        log_strategy_start_info(3, arrays, ConfigRecord({"lr": 0.1}), None)
    text = caplog.text
    assert "Number of rounds: 3" in text
    assert "'lr': 0.1" in text


def test_aggregate_metricrecords_is_the_weighted_mean_without_the_weight_key() -> None:
    records = [
        RecordDict({"metrics": MetricRecord({"loss": 1.0, "acc": [0.0, 1.0], "n": 1})}),
        RecordDict({"metrics": MetricRecord({"loss": 4.0, "acc": [1.0, 1.0], "n": 3})}),
    ]
    out = aggregate_metricrecords(records, "n")
    assert set(out) == {"loss", "acc"}
    assert out["loss"] == pytest.approx(3.25)
    assert out["acc"] == pytest.approx([0.75, 1.0])


# --- types: flwr.clientapp.typing, flwr.supercore.run, flwr.proto.node_pb2 --------------------


def test_mod_types_are_flowers_mod_signature() -> None:
    assert ClientAppCallable == Callable[[Message, Context], Message]
    assert Mod == Callable[[Message, Context, ClientAppCallable], Message]


def test_grid_abstract_methods_use_run_and_node_info() -> None:
    hints = typing.get_type_hints(Grid.set_run)
    assert list(inspect.signature(Grid.set_run).parameters) == ["self", "run"]
    assert hints["run"] is Run
    run_getter = Grid.run.fget
    assert run_getter is not None
    assert typing.get_type_hints(run_getter)["return"] is Run
    assert typing.get_type_hints(Grid.get_nodes)["return"] == Iterable[NodeInfo]


def test_empty_run_has_only_the_run_id() -> None:
    run = empty_run(17)
    assert isinstance(run, Run)
    assert run.run_id == 17


def test_client_app_raised_exception_code() -> None:
    from flwr.common.constant import ErrorCode

    assert CLIENT_APP_RAISED_EXCEPTION == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert isinstance(CLIENT_APP_RAISED_EXCEPTION, int)


# --- the rest of the package uses Flower's public API only ------------------------------------

# Flower's public surface: these modules, and only the names in their ``__all__``.
_PUBLIC_MODULES = (
    "flwr.app",
    "flwr.serverapp",
    "flwr.serverapp.strategy",
    "flwr.clientapp",
    "flwr.clientapp.mod",
    "flwr.simulation",
    "flwr.common",
)
# The deprecated pre-Message API; only our adapter to Flower's legacy Strategy uses it.
_LEGACY_MODULES = {
    "flwr.server.client_manager": "strategies/legacy.py",
    "flwr.server.client_proxy": "strategies/legacy.py",
    "flwr.server.strategy": "strategies/legacy.py",
}


def _flwr_imports(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """``(line, module, imported name or None)`` for every ``flwr`` import in ``path``."""
    with warnings.catch_warnings():
        # (escape-sequence warnings are ruff's W605 to report, not this check's)
        warnings.simplefilter("ignore", (SyntaxWarning, DeprecationWarning))
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "flwr":
                    yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            module = node.module
            if module.split(".")[0] == "flwr":
                for alias in node.names:
                    yield node.lineno, module, alias.name


def _is_public(module: str, name: str | None) -> bool:
    if module not in _PUBLIC_MODULES:
        return False
    return name is None or name in getattr(importlib.import_module(module), "__all__", ())


def test_only_flower_compat_reaches_past_flowers_public_api() -> None:
    package = Path(flower_suite.__file__).parent
    compat = Path(flower_compat.__file__)
    offenders = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        if path == compat:
            continue
        for line, module, name in _flwr_imports(path):
            if _LEGACY_MODULES.get(module) == relative or _is_public(module, name):
                continue
            offenders.append(f"{relative}:{line}: {module}" + (f".{name}" if name else ""))
    assert not offenders, "use flower_suite.flower_compat instead:\n" + "\n".join(offenders)
