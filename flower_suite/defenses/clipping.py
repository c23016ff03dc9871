"""Norm-difference clipping (NDC; Sun et al., 2019, "Can you really backdoor federated
learning?"), the defense of the dissertation's chapter 8 (spec ``edge-case-backdoors.md`` §5).

Every update ``x_i = w_i - w`` is scaled into the L2 ball of radius ``M`` before aggregation::

    x_i <- x_i / max(1, ||x_i||_2 / M)

so ``w_i <- w + (w_i - w) / max(1, ||w_i - w|| / M)``. Norms are computed in float64. Rows
already inside the ball are copied bitwise (never multiplied by 1.0), so clipping is a no-op on
small updates and never increases a norm. :func:`norm_clipping` composes the clipping with any
rule of :data:`flower_suite.aggregation.AGGREGATORS` ("NDC + Krum").
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from flower_suite.aggregation import AGGREGATORS
from flower_suite.aggregation.base import AggregationResult, check_updates
from flower_suite.defenses.similarity import row_norms

Rule = Callable[..., AggregationResult]


@dataclass(frozen=True)
class ClipResult:
    """Clipped updates and what the clipping did.

    ``updates``: ``(n, d)`` clipped updates in the input dtype and device (a new tensor).
    ``scales``: ``(n,)`` float64 factors ``min(1, M / ||x_i||)`` that were applied.
    ``norms``: ``(n,)`` float64 L2 norms *before* clipping.
    """

    updates: torch.Tensor
    scales: torch.Tensor
    norms: torch.Tensor

    @property
    def clipped(self) -> torch.Tensor:
        """Boolean ``(n,)``: which rows were scaled down."""
        return self.scales < 1.0

    @property
    def fraction_clipped(self) -> float:
        """Share of rows that were scaled down."""
        return float(self.clipped.double().mean())


def check_positive(value: float, *, name: str, rule: str, allow_zero: bool = False) -> None:
    """``ValueError`` unless ``value`` is a finite number ``> 0`` (``>= 0`` with ``allow_zero``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{rule}: {name} must be a finite number {bound} (got {name}={value!r})")


def median(values: torch.Tensor) -> float:
    """The median of a 1-D tensor; for even length the mean of the two middle values.

    (``torch.median`` returns the lower middle value, which is not the median.)
    """
    ordered = values.to(torch.float64).sort().values
    k = ordered.numel()
    return float(ordered[k // 2]) if k % 2 else float((ordered[k // 2 - 1] + ordered[k // 2]) / 2)


def clip_rows(updates: torch.Tensor, bounds: torch.Tensor, norms: torch.Tensor) -> ClipResult:
    """Scale row ``i`` to norm ``bounds[i]`` where ``norms[i] > bounds[i]``; copy it otherwise.

    ``bounds`` and ``norms`` are float64 ``(n,)``. The scale factor is computed and applied in
    float64 and the row cast back to the input dtype, so only clipped rows are rounded.
    """
    scales = torch.where(
        norms > bounds,
        bounds / norms.clamp(min=torch.finfo(torch.float64).tiny),
        torch.ones_like(norms),
    )
    out = updates.clone()
    for i in (scales < 1.0).nonzero().flatten().tolist():
        out[i] = (updates[i].to(torch.float64) * scales[i]).to(updates.dtype)
    return ClipResult(updates=out, scales=scales, norms=norms)


def clip_to_norm(updates: torch.Tensor, max_norm: float) -> ClipResult:
    """Norm-difference clipping of every row of ``updates`` to L2 norm at most ``max_norm``.

    Parameters
    ----------
    updates : torch.Tensor
        ``(n, d)`` floating-point updates ``w_i - w`` (never raw models: clipping is not
        translation-equivariant).
    max_norm : float
        The clipping bound ``M > 0`` (the dissertation uses ``M = 2`` for CIFAR-10/EMNIST and
        1.5 for Sentiment140; calibrate it to the median honest norm for new models).

    Returns
    -------
    ClipResult
        ``x_i * min(1, M / ||x_i||)`` per row; rows with ``||x_i|| <= M`` are bitwise copies.

    Examples
    --------
    >>> clip_to_norm(torch.tensor([[3.0, 4.0], [0.3, 0.4]]), 2.0).updates
    tensor([[1.2000, 1.6000],
            [0.3000, 0.4000]])
    """
    check_updates(updates, rule="norm_clipping")
    check_positive(max_norm, name="max_norm", rule="norm_clipping")
    norms = row_norms(updates)
    return clip_rows(updates, torch.full_like(norms, float(max_norm)), norms)


def bind_rule(aggregation: str | Rule, aggregation_kwargs: Mapping[str, Any] | None) -> Rule:
    """A rule of ``AGGREGATORS`` by name (kwargs checked) or a callable, with kwargs bound."""
    kwargs = dict(aggregation_kwargs or {})
    if callable(aggregation):
        return functools.partial(aggregation, **kwargs) if kwargs else aggregation
    AGGREGATORS.check_kwargs(aggregation, kwargs, field="aggregation_kwargs")
    for key, param in AGGREGATORS.parameters(aggregation).items():
        # Fail when the defense is configured, not in the middle of a round.
        required = param.kind is inspect.Parameter.KEYWORD_ONLY and param.default is param.empty
        if required and key not in kwargs:
            raise ValueError(f"{aggregation} needs aggregation_kwargs.{key}")
    return functools.partial(AGGREGATORS.get(aggregation), **kwargs)


def clipping_info(clip: ClipResult) -> dict[str, float]:
    """Per-round diagnostics of a clipping step (floats, for the run records)."""
    return {
        "fraction-clipped": clip.fraction_clipped,
        "median-norm": median(clip.norms),
        "max-input-norm": float(clip.norms.max()),
    }


def norm_clipping(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    max_norm: float,
    aggregation: str | Rule = "mean",
    aggregation_kwargs: Mapping[str, Any] | None = None,
) -> AggregationResult:
    """NDC: clip every update to ``max_norm``, then aggregate with ``aggregation``.

    Parameters
    ----------
    updates, weights
        As for every aggregation rule: ``(n, d)`` updates and optional ``(n,)`` weights.
    max_norm : float
        Clipping bound ``M > 0``.
    aggregation : str or callable, default "mean"
        A name in :data:`flower_suite.aggregation.AGGREGATORS` (``"mean"`` is the paper's
        FedAvg; ``"krum"``, ``"multi_krum"``, ... compose) or a rule callable.
    aggregation_kwargs : mapping, optional
        Keyword arguments of that rule (e.g. ``{"num_malicious_nodes": 1}``).

    Returns
    -------
    AggregationResult
        The rule's result on the clipped updates; ``info`` adds ``fraction-clipped``,
        ``median-norm`` and ``max-input-norm`` (norms before clipping).
    """
    rule = bind_rule(aggregation, aggregation_kwargs)
    clip = clip_to_norm(updates, max_norm)
    inner = rule(clip.updates, weights)
    return AggregationResult(
        aggregate=inner.aggregate,
        selected=inner.selected,
        info={**inner.info, **clipping_info(clip)},
    )
