"""What a FedMA run measures, per FedMA round: global widths, growth, matching time, bytes.

These are the quantities dissertation ch. 5 compares methods by: §5.2 plots accuracy against
the gigabytes exchanged (spec §7 says what to meter) and reports how much the matched global
model grew (Tables 5.6, 5.7; spec §8). Kept apart from :class:`~flower_suite.strategies.FedMA`
so the strategy module stays a Flower adapter; the strategy exposes these dicts as its
``width_history``, ``growth_history``, ``matching_time`` and ``bytes_history``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from flwr.app import ArrayRecord, MetricRecord, RecordDict

from flower_suite.matching.architecture import count_state_parameters, state_shapes
from flower_suite.strategies.fedma_state import array_record_bytes

__all__ = ["FedMARecords"]


@dataclass
class FedMARecords:
    """Per-FedMA-round records of one run of the strategy.

    Attributes
    ----------
    widths:
        FedMA round -> global width of each hidden layer.
    growth:
        FedMA round -> parameters of the global model / parameters of ``model_fn()``.
    matching_time:
        FedMA round -> seconds spent matching and averaging each hidden layer.
    bytes:
        FedMA round -> ``{"sent": ..., "received": ...}``: bytes of all ArrayRecords the
        strategy sent and received in that round's training exchanges (4 bytes per float32).
    """

    widths: dict[int, list[int]] = field(default_factory=dict)
    growth: dict[int, float] = field(default_factory=dict)
    matching_time: dict[int, list[float]] = field(default_factory=dict)
    bytes: dict[int, dict[str, int]] = field(default_factory=dict)

    def clear(self) -> None:
        """Forget a previous run. In place: the strategy's attributes are these very dicts."""
        for history in (self.widths, self.growth, self.matching_time, self.bytes):
            history.clear()

    def count_bytes(
        self,
        fedma_round: int,
        direction: Literal["sent", "received"],
        contents: Iterable[RecordDict],
    ) -> None:
        """Add the ArrayRecord bytes of ``contents`` to the round's traffic (spec §7)."""
        record = self.bytes.setdefault(fedma_round, {"sent": 0, "received": 0})
        record[direction] += sum(array_record_bytes(c) for c in contents)

    def record_pass(
        self,
        fedma_round: int,
        *,
        global_arrays: ArrayRecord,
        template_shapes: Mapping[str, tuple[int, ...]],
        widths: list[int],
        seconds: list[float],
        metrics: MetricRecord,
    ) -> None:
        """Record a completed layer-wise pass and report it in the round's ``metrics``
        (``fedma-growth``, ``fedma-matching-s``, ``fedma-width-<layer>``)."""
        self.widths[fedma_round] = list(widths)
        self.matching_time[fedma_round] = list(seconds)
        growth = count_state_parameters(state_shapes(global_arrays)) / count_state_parameters(
            template_shapes
        )
        self.growth[fedma_round] = growth
        metrics["fedma-growth"] = growth
        metrics["fedma-matching-s"] = float(sum(seconds))
        for index, width in enumerate(widths):
            metrics[f"fedma-width-{index}"] = width
