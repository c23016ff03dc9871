"""Gaussian-noise defenses: weak differential privacy and CRFL-style parameter smoothing.

**Weak DP** (Sun et al., 2019; dissertation ch. 8, spec ``edge-case-backdoors.md`` §5 and
pitfall 10): clip every update to ``M`` (NDC), aggregate, then add ``N(0, sigma^2 I)`` *once*
to the aggregate (i.e. to the new global model, not to the clients' models)::

    w_next = w + A(clip_M(x_1), ..., clip_M(x_n)) + N(0, sigma^2 I)

The dissertation reports ``sigma = 0.005`` (CIFAR-10) and ``0.001``/``0.002`` (EMNIST); the
clip bound is not stated, so the task's NDC ``M`` is used.

**CRFL** (Xie, Chen, Chen and Li, ICML 2021, "CRFL: Certifiably Robust Federated Learning
against Backdoor Attacks"): after aggregation the server clips the *global model parameters*
to norm ``rho`` and adds isotropic parameter noise before broadcasting::

    w_next = w' / max(1, ||w'||_2 / rho) + N(0, sigma^2 I),   w' = w + A(x_1, ..., x_n)

Only the training-time clipping and perturbation are implemented here; CRFL's test-time
parameter smoothing and certification (Monte-Carlo over noisy copies) are out of scope.

Noise is drawn in float64 from an explicit ``torch.Generator`` on the CPU (reproducible on any
device) and cast to the parameters' dtype.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from flower_suite.aggregation.base import AggregationResult, check_updates
from flower_suite.defenses.clipping import Rule, bind_rule, check_positive, norm_clipping


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (``None``: fresh OS entropy)."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))
    return generator


def gaussian_noise(
    size: int, std: float, generator: torch.Generator, *, device: torch.device | None = None
) -> torch.Tensor:
    """``N(0, std^2)`` samples as a float64 ``(size,)`` tensor (drawn on the CPU)."""
    check_positive(std, name="noise_std", rule="gaussian_noise", allow_zero=True)
    noise = torch.randn(size, generator=generator, dtype=torch.float64)
    noise.mul_(std)
    return noise if device is None else noise.to(device)


def add_gaussian_noise(
    vector: torch.Tensor,
    std: float,
    generator: torch.Generator,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``vector + N(0, std^2 I)`` in float64 (a new tensor); ``std = 0`` returns a copy.

    ``mask`` (optional boolean ``(d,)``) restricts the noise to the selected entries.
    """
    out = vector.to(torch.float64).clone()
    if std > 0:
        noise = gaussian_noise(out.numel(), std, generator, device=out.device)
        if mask is not None:
            noise[~mask.to(noise.device)] = 0.0
        out += noise
    return out


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    return generator if generator is not None else make_generator(seed)


def weak_dp(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    max_norm: float,
    noise_std: float,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    aggregation: str | Rule = "mean",
    aggregation_kwargs: Mapping[str, Any] | None = None,
) -> AggregationResult:
    """Weak DP: NDC clipping to ``max_norm``, the aggregation rule, then Gaussian noise.

    Parameters
    ----------
    updates, weights
        ``(n, d)`` updates and optional ``(n,)`` weights.
    max_norm : float
        Per-update clipping bound ``M > 0``.
    noise_std : float
        ``sigma >= 0`` of the noise added once to the aggregate.
    seed, generator
        Noise source: ``generator`` if given (callers keep one across rounds), else a new one
        seeded with ``seed`` (``None``: OS entropy).
    aggregation, aggregation_kwargs
        The rule applied to the clipped updates (see :func:`norm_clipping`).

    Returns
    -------
    AggregationResult
        ``A(clipped) + N(0, sigma^2 I)`` in the input dtype; ``info`` holds the clipping
        diagnostics and ``noise-std``.
    """
    check_positive(noise_std, name="noise_std", rule="weak_dp", allow_zero=True)
    result = norm_clipping(
        updates,
        weights,
        max_norm=max_norm,
        aggregation=aggregation,
        aggregation_kwargs=aggregation_kwargs,
    )
    noisy = add_gaussian_noise(result.aggregate, noise_std, _generator(seed, generator))
    return AggregationResult(
        aggregate=noisy.to(updates.dtype),
        selected=result.selected,
        info={**result.info, "noise-std": float(noise_std)},
    )


def clip_parameters(
    params: torch.Tensor, rho: float, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, float]:
    """CRFL's model clipping ``w / max(1, ||w||_2 / rho)`` in float64.

    ``mask`` (optional boolean ``(d,)``) selects the entries that are measured and scaled
    (e.g. floating-point parameters only, leaving integer buffers such as BatchNorm's
    ``num_batches_tracked`` alone). Returns the clipped float64 vector and the norm before
    clipping.
    """
    check_positive(rho, name="rho", rule="crfl")
    out = params.to(torch.float64).clone()
    selected = out if mask is None else out[mask.to(out.device)]
    norm = float(torch.linalg.vector_norm(selected))
    if norm > rho:
        if mask is None:
            out.mul_(rho / norm)
        else:
            out[mask.to(out.device)] = selected * (rho / norm)
    return out, norm


def crfl(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    global_params: torch.Tensor,
    rho: float,
    sigma: float,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    param_mask: torch.Tensor | None = None,
    aggregation: str | Rule = "mean",
    aggregation_kwargs: Mapping[str, Any] | None = None,
) -> AggregationResult:
    """CRFL server step, returned as an update so it plugs into the update-based strategies.

    Parameters
    ----------
    updates, weights
        ``(n, d)`` updates and optional ``(n,)`` weights.
    global_params : torch.Tensor
        ``(d,)`` current global model ``w`` (the frame the updates are measured in).
    rho : float
        Model-norm bound ``rho > 0`` (Xie et al.'s ``rho_t``; keep it constant or pass a new
        value each round for a schedule).
    sigma : float
        Parameter-noise std ``sigma >= 0``.
    seed, generator
        Noise source, as in :func:`weak_dp`.
    param_mask : torch.Tensor, optional
        Boolean ``(d,)``: entries that are clipped and perturbed (default all).
    aggregation, aggregation_kwargs
        The rule producing ``A(x_1..x_n)`` (default FedAvg's weighted mean).

    Returns
    -------
    AggregationResult
        ``aggregate = clip_rho(w + A) + noise - w`` in the input dtype, so that
        ``w + aggregate`` is CRFL's new global model. ``info``: ``model-norm`` (before
        clipping), ``model-clipped`` (1.0 or 0.0), ``noise-std``, plus the rule's info.
    """
    check_updates(updates, weights, rule="crfl")
    check_positive(sigma, name="sigma", rule="crfl", allow_zero=True)
    d = updates.shape[1]
    if global_params.shape != (d,) or not torch.isfinite(global_params).all():
        raise ValueError(
            f"crfl: global_params must be a finite ({d},) tensor, got {tuple(global_params.shape)}"
        )
    if param_mask is not None and (param_mask.shape != (d,) or param_mask.dtype != torch.bool):
        raise ValueError(f"crfl: param_mask must be a boolean ({d},) tensor")
    inner = bind_rule(aggregation, aggregation_kwargs)(updates, weights)
    base = global_params.to(device=updates.device, dtype=torch.float64)
    clipped, norm = clip_parameters(base + inner.aggregate.to(torch.float64), rho, param_mask)
    noisy = add_gaussian_noise(clipped, sigma, _generator(seed, generator), param_mask)
    return AggregationResult(
        aggregate=(noisy - base).to(updates.dtype),
        selected=inner.selected,
        info={
            **inner.info,
            "model-norm": norm,
            "model-clipped": float(norm > rho),
            "noise-std": float(sigma),
        },
    )
