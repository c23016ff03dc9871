"""Per-round server-side measurements: the extensible hook mechanism of the runner.

A hook is called once per round (and once for round 0, the initial model) with the current
global arrays and returns metrics to add to that round's record. Hooks are built by factories
that receive a :class:`HookContext`, so one can reach the strategy (selection records), the
metered grid (bytes, :mod:`~flower_suite.simulations.engine.metering`) or the task (model,
data). Attack runs add the hooks of ``attack_hooks.py`` (backdoor accuracy, attacker
selection, update norms).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from flwr.app import ArrayRecord
from flwr.serverapp.strategy import Strategy
from torch import nn

from flower_suite.clients.client_app import load_arrays
from flower_suite.data.dataset import ArrayDataset
from flower_suite.simulations.engine.metering import MeteredGrid
from flower_suite.simulations.engine.task import ExperimentTask
from flower_suite.simulations.threats.server import ServerThreat
from flower_suite.training import evaluate, select_device

__all__ = [
    "DEFAULT_HOOKS",
    "HookContext",
    "HookFactory",
    "RoundHook",
    "TestSetEvaluation",
    "communication",
    "selection_records",
    "test_set_evaluation",
]


class RoundHook(Protocol):
    def __call__(self, server_round: int, arrays: ArrayRecord) -> Mapping[str, Any]: ...


@dataclass
class HookContext:
    """What a hook factory may use."""

    task: ExperimentTask
    strategy: Strategy
    grid: MeteredGrid
    # Runs with an [attack] section: the attack grid and plan; else None.
    threat: ServerThreat | None = None

    def model_for(self, arrays: ArrayRecord) -> nn.Module:
        """A model holding ``arrays``, whatever their architecture: strategies that change
        it (PUFFERFISH factorization, FedMA's wider layers) provide ``model_for_arrays``."""
        build = getattr(self.strategy, "model_for_arrays", None)
        if build is not None:
            return build(arrays)
        model = self.task.build_model()
        load_arrays(model, arrays)
        return model


HookFactory = Callable[[HookContext], RoundHook]


class TestSetEvaluation:
    """Loss and accuracy of the global model on the held-out test set."""

    __test__ = False  # not a pytest class

    def __init__(
        self,
        model_fn: Callable[[], nn.Module],
        test: ArrayDataset,
        prefix: str = "test",
        model_for: Callable[[ArrayRecord], nn.Module] | None = None,
    ) -> None:
        self.model = model_fn()
        self.test = test
        self.prefix = prefix
        self.device = select_device()
        self.model_for = model_for  # for arrays of another architecture than model_fn's

    def __call__(self, server_round: int, arrays: ArrayRecord) -> Mapping[str, float]:
        if self.model_for is not None and not _fits(self.model, arrays):
            self.model = self.model_for(arrays)
        else:
            load_arrays(self.model, arrays)
        result = evaluate(self.model, self.test, device=self.device)
        return {f"{self.prefix}-loss": result.loss, f"{self.prefix}-acc": result.accuracy}


def test_set_evaluation(ctx: HookContext) -> RoundHook:
    """Default hook factory: evaluate on the experiment's test split."""
    return TestSetEvaluation(ctx.task.build_model, ctx.task.data()[1], model_for=ctx.model_for)


def _fits(model: nn.Module, arrays: ArrayRecord) -> bool:
    state = model.state_dict()
    return list(state) == list(arrays.keys()) and all(
        tuple(state[k].shape) == tuple(arrays[k].shape) for k in state
    )


def communication(ctx: HookContext) -> RoundHook:
    """Bytes of arrays sent to and received from clients since the last round (down and up);
    under ``[compression]`` also the decoded replies' codec bytes, their uncompressed size,
    the replies excluded as bad payloads and the server's decoding time."""

    def hook(server_round: int, arrays: ArrayRecord) -> Mapping[str, float]:
        sent, received = ctx.grid.take_counts()
        out = {
            "bytes-sent": float(sent),
            "bytes-received": float(received),
            # Size of the global model, which changes under PUFFERFISH and FedMA.
            "global-bytes": float(arrays.count_bytes()),
        }
        records = getattr(ctx.strategy, "compression_records", None)  # `Compressed`'s
        record = records.get(server_round) if isinstance(records, dict) else None
        if record is not None:
            out["compression-bytes-up"] = float(record.bytes_up)
            out["compression-bytes-dense"] = float(record.dense_bytes)
            out["compression-rejected"] = float(len(record.rejected))
            out["compression-decode-s"] = float(record.decode_s)
        return out

    return hook


def selection_records(ctx: HookContext) -> RoundHook:
    """Which node ids a robust strategy selected and rejected this round (if it records them).

    Strategies deriving from ``RobustFedAvg`` keep ``records[round]``; for others this hook
    adds nothing.
    """

    def hook(server_round: int, arrays: ArrayRecord) -> Mapping[str, Any]:
        records = getattr(ctx.strategy, "records", None)
        record = records.get(server_round) if isinstance(records, dict) else None
        if record is None:
            return {}
        out: dict[str, Any] = {
            "selected-nodes": list(record.selected),
            "rejected-nodes": [node for node, _ in record.rejected],
        }
        partitions = ctx.grid.partitions
        if partitions:
            out["selected-partitions"] = [partitions.get(n, -1) for n in record.selected]
            out["rejected-partitions"] = [partitions.get(n, -1) for n, _ in record.rejected]
        out.update({f"rule-{key}": value for key, value in record.info.items()})
        if record.skipped:
            out["skipped"] = record.skipped
        return out

    return hook


DEFAULT_HOOKS: tuple[HookFactory, ...] = (test_set_evaluation, communication, selection_records)
