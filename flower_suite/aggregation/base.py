"""Shared types and input checks for the robust aggregation rules.

Every rule is a pure function over a stacked ``(n, d)`` tensor of client updates (update =
client model - current global model; see robust-aggregation spec section 1) with optional
non-negative weights ``(n,)``, returning an :class:`AggregationResult`. Rules never modify
their inputs, keep the input dtype and device for the aggregate, and accumulate in float64
where cancellation matters.
"""

from __future__ import annotations

from collections.abc import Iterator
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
    # Fast exact screen: a row sum is finite only if every entry is (inf/NaN propagate); a
    # non-finite sum (possibly mere overflow) falls through to the elementwise test.
    if not torch.isfinite(updates.sum(dim=1)).all() and not torch.isfinite(updates).all():
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
    """float64 weights summing to 1 (uniform when ``weights`` is None).

    Divided by their maximum before summing: claims of 1e308 examples would otherwise sum to
    inf and normalize to all zeros (a zero aggregate, silently).
    """
    if weights is None:
        return torch.full((n,), 1.0 / n, dtype=torch.float64, device=device)
    w = weights.to(device=device, dtype=torch.float64)
    w = w / w.max()
    return w / w.sum()


# Elements (rows x columns) per working block of the chunked kernels: small enough to stay in
# cache for the selection kernels, large enough that per-call overhead is negligible.
DEFAULT_CHUNK_ELEMENTS = 2**20


def column_chunks(n: int, d: int, max_elements: int | None = None) -> Iterator[slice]:
    """Column slices covering ``range(d)``, each ``(n, c)`` block at most ``max_elements`` big.

    ``max_elements`` defaults to the module's current ``DEFAULT_CHUNK_ELEMENTS``.
    """
    budget = DEFAULT_CHUNK_ELEMENTS if max_elements is None else max_elements
    width = max(1, budget // max(1, n))
    for start in range(0, d, width):
        yield slice(start, min(d, start + width))


def weighted_sum_f64(updates: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """``sum_i coefficients[i] * updates[i]`` as a float64 ``(d,)`` tensor.

    ``coefficients`` is a float64 ``(n,)`` tensor. Row-wise ``axpy`` into a float64 accumulator
    (no float64 copy of ``updates``; rows with a zero coefficient are skipped), summed in row
    order.
    """
    out = torch.zeros(updates.shape[1], dtype=torch.float64, device=updates.device)
    for row, coefficient in zip(updates, coefficients.tolist(), strict=True):
        if coefficient != 0.0:
            out.add_(row, alpha=coefficient)
    return out


def sq_distances_to(updates: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    """``||updates[i] - point||^2`` for every row, accumulated in float64, shape ``(n,)``.

    ``point`` is a float64 ``(d,)`` tensor on the device of ``updates``.
    """
    n, d = updates.shape
    out = torch.zeros(n, dtype=torch.float64, device=updates.device)
    for cols in column_chunks(n, d):
        # one float64 copy, then in place: a third of the time of `x.to(f64) - p` and `d * d`
        diff = updates[:, cols].to(torch.float64, copy=True)
        diff -= point[cols]
        out += diff.square_().sum(dim=1)
    return out
