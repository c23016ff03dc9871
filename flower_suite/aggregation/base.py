"""Shared types and input checks for the robust aggregation rules.

Every rule is a pure function over a stacked ``(n, d)`` tensor of client updates (update =
client model - current global model; see robust-aggregation spec section 1) with optional
non-negative weights ``(n,)``, returning an :class:`AggregationResult`. Rules never modify
their inputs, keep the input dtype and device for the aggregate, and accumulate in float64
where cancellation matters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class AggregationResult:
    """The aggregate and a record of what the rule did.

    ``selected``: indices (into the n inputs) the rule chose (Krum, Multi-Krum, Bulyan's
    selection set, DETOX vote winners); empty when every input contributes (median, mean).
    ``info``: scalar diagnostics, e.g. ``{"iterations": 12, "converged": 1.0}``.
    """

    aggregate: torch.Tensor
    selected: tuple[int, ...] = ()
    info: dict[str, float] = field(default_factory=dict)


def check_updates(updates: torch.Tensor, weights: torch.Tensor | None = None, *, rule: str) -> None:
    """Raise ``ValueError`` for anything a rule cannot aggregate correctly.

    The message names the rule: ``"krum: updates must be a 2-D (n, d) tensor, got (3,)"``.
    """
    if updates.ndim != 2:
        raise ValueError(f"{rule}: updates must be a 2-D (n, d) tensor, got {tuple(updates.shape)}")
    if updates.shape[0] == 0 or updates.shape[1] == 0:
        raise ValueError(f"{rule}: need at least one update of at least one entry")
    if not updates.is_floating_point():
        raise ValueError(f"{rule}: updates must be floating point, got {updates.dtype}")
    if not torch.isfinite(updates).all():
        bad = (~torch.isfinite(updates)).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(f"{rule}: updates {bad} contain NaN or Inf")
    if weights is not None:
        if weights.shape != (updates.shape[0],):
            raise ValueError(
                f"{rule}: weights must have shape ({updates.shape[0]},), got {tuple(weights.shape)}"
            )
        if not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"{rule}: weights must be finite, non-negative and not all zero")


def check_f(n: int, f: int, *, rule: str, minimum_n: int, formula: str) -> None:
    """Precondition ``n >= minimum_n`` (given as a formula such as ``"2f+3"``) and ``f >= 0``."""
    if f < 0:
        raise ValueError(f"{rule}: num_malicious_nodes must be >= 0 (got f={f})")
    if n < minimum_n:
        raise ValueError(f"{rule} requires n >= {formula} (got n={n}, f={f})")


def normalized_weights(weights: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
    """float64 weights summing to 1 (uniform when ``weights`` is None)."""
    if weights is None:
        return torch.full((n,), 1.0 / n, dtype=torch.float64, device=device)
    w = weights.to(device=device, dtype=torch.float64)
    return w / w.sum()
