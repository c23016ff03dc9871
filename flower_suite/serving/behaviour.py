"""Injectable worker behaviour for serving experiments (ApproxIFER, AAAI 2022, Section 5;
spec §1, §10).

A :class:`WorkerBehaviour` is shipped with a request and applied inside the worker actor: an
extra delay (a straggler) and/or a corruption of the returned prediction (a Byzantine worker:
``f(X̃_i) + N(0, σ²)`` as in the paper, a sign flip, a constant offset, or, to test the
master's screening, NaN values or a wrong output shape). An :class:`InjectionPlan` draws, per
batch and from its seed, which workers straggle and which lie.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

BYZANTINE_KINDS: tuple[str, ...] = ("gaussian", "sign_flip", "offset", "nan", "wrong_shape")


@dataclass(frozen=True)
class WorkerBehaviour:
    """How one worker misbehaves on one request: ``delay_s`` extra seconds before answering,
    and ``byzantine`` (one of :data:`BYZANTINE_KINDS`, or ``None`` for an honest answer)."""

    delay_s: float = 0.0
    byzantine: str | None = None
    sigma: float = 1.0  # "gaussian": noise standard deviation
    offset: float = 10.0  # "offset": value added to every output

    def __post_init__(self) -> None:
        if not (math.isfinite(self.delay_s) and self.delay_s >= 0):
            raise ValueError(f"delay_s must be a finite number >= 0, not {self.delay_s}")
        if self.byzantine is not None and self.byzantine not in BYZANTINE_KINDS:
            raise ValueError(f"byzantine must be one of {BYZANTINE_KINDS}, not {self.byzantine!r}")
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            raise ValueError(f"sigma must be a finite number >= 0, not {self.sigma}")
        if not math.isfinite(self.offset):
            raise ValueError(f"offset must be finite, not {self.offset}")

    def corrupt(self, outputs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The answer a worker with this behaviour returns instead of ``outputs``."""
        if self.byzantine is None:
            return outputs
        if self.byzantine == "gaussian":
            return outputs + rng.normal(0.0, self.sigma, size=outputs.shape)
        if self.byzantine == "sign_flip":
            return -outputs
        if self.byzantine == "offset":
            return outputs + self.offset
        if self.byzantine == "nan":
            return np.full_like(outputs, np.nan)
        return np.zeros((*outputs.shape[:-1], outputs.shape[-1] + 1), dtype=outputs.dtype)


@dataclass(frozen=True)
class InjectionPlan:
    """Per batch, ``stragglers_per_batch`` random workers answer ``straggler_delay_s`` late and
    ``byzantine_per_batch`` other random workers answer with ``byzantine``'s corruption;
    ``fixed`` gives some workers one behaviour on every batch (it wins over the draws)."""

    stragglers_per_batch: int = 0
    straggler_delay_s: float = 0.0
    byzantine_per_batch: int = 0
    byzantine: WorkerBehaviour = field(
        default_factory=lambda: WorkerBehaviour(byzantine="gaussian")
    )
    fixed: Mapping[int, WorkerBehaviour] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("stragglers_per_batch", "byzantine_per_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
        if not (math.isfinite(self.straggler_delay_s) and self.straggler_delay_s >= 0):
            raise ValueError(
                f"straggler_delay_s must be a finite number >= 0, not {self.straggler_delay_s}"
            )

    def behaviours(self, batch_index: int, num_workers: int) -> dict[int, WorkerBehaviour]:
        """Worker id -> behaviour for batch ``batch_index`` (honest workers are absent)."""
        drawn = self.stragglers_per_batch + self.byzantine_per_batch
        if drawn > num_workers:
            raise ValueError(
                f"the plan draws {drawn} misbehaving workers per batch but there are only "
                f"{num_workers} workers"
            )
        rng = np.random.default_rng([self.seed, batch_index])
        chosen = [int(i) for i in rng.permutation(num_workers)[:drawn]]
        out: dict[int, WorkerBehaviour] = {}
        for i in chosen[: self.stragglers_per_batch]:
            out[i] = WorkerBehaviour(delay_s=self.straggler_delay_s)
        for i in chosen[self.stragglers_per_batch :]:
            out[i] = self.byzantine
        for i, behaviour in self.fixed.items():
            if 0 <= int(i) < num_workers:
                out[int(i)] = behaviour
        return out


def screen_output(value: object, expected_shape: tuple[int, ...]) -> str | None:
    """Why a worker's answer cannot be used (not an array, wrong shape, non-finite), or None."""
    if not isinstance(value, np.ndarray):
        return f"answer is {type(value).__name__}, not an array"
    if value.shape != expected_shape:
        return f"answer has shape {value.shape}, expected {expected_shape}"
    if not np.issubdtype(value.dtype, np.number) or not np.all(np.isfinite(value)):
        return "answer has NaN, inf or non-numeric values"
    return None
