"""Errors of the secure-aggregation protocol (spec ``secagg.md`` sections 2 and 6)."""

from __future__ import annotations

from collections.abc import Mapping


class SecAggError(ValueError):
    """A protocol message or a local check failed (bad stage order, tampered share, ...).

    Raised by a party that refuses to go on; the other parties see it as a dropout.
    """


class SecAggAbort(RuntimeError):  # noqa: N818 (the spec's name)
    """The server stops the round: too few clients survive a stage (spec section 6).

    ``stage`` is the stage whose replies were too few, ``counts`` the numbers that failed the
    check (survivors, threshold, minimum, offending client ...). No aggregate is released.
    """

    def __init__(self, stage: str, reason: str, counts: Mapping[str, int] | None = None) -> None:
        self.stage = stage
        self.reason = reason
        self.counts = dict(counts or {})
        detail = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        super().__init__(f"secure aggregation aborted at stage {stage!r}: {reason} ({detail})")
