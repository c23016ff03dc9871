"""The white-box edge-case attackers: PGD and PGD with model replacement (framework-free).

Wang et al., "Attack of the Tails: Yes, You Really Can Backdoor Federated Learning",
NeurIPS 2020 (spec ``edge-case-backdoors.md`` section 3):

- **PGD without replacement** (3b): SGD on the poisoned data ``D'`` while keeping the local
  model in the l2 ball ``||w_i - w|| <= delta`` around the received global model ``w``:
  ``w_i <- w + delta (w_i - w) / ||w_i - w||`` whenever the norm exceeds ``delta``, every
  ``project_every`` (10) SGD steps **and after the last step**, so the bound holds exactly.
  The radius may decay per round: ``delta_t = delta_0 gamma^t``.
- **PGD with model replacement** (3c): run PGD with a small radius, then send
  ``w + (n_S / n_i)(w_i - w)``. If the honest updates are about zero, FedAvg's
  ``w + sum_i (n_i / n_S)(w_i - w)`` then lands on ``w_i``.

The ball covers every floating-point entry of the state dict (parameters and float buffers,
since the server's update vector holds them all); integer buffers such as BatchNorm's
``num_batches_tracked`` are neither projected nor scaled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, overload

import torch
from torch import nn

from flower_suite.data.dataset import ArrayDataset
from flower_suite.training import TrainConfig, TrainResult, select_device, train

StateDict = Mapping[str, torch.Tensor]
_T = TypeVar("_T", torch.Tensor, dict[str, torch.Tensor])


def check_radius(radius: float) -> float:
    """``radius`` as a float; ``ValueError`` unless finite and ``>= 0``."""
    radius = float(radius)
    if not math.isfinite(radius) or radius < 0:
        raise ValueError(f"PGD radius must be finite and >= 0, got {radius}")
    return radius


def _float_keys(state: StateDict) -> list[str]:
    return [key for key, value in state.items() if value.is_floating_point()]


def l2_distance(params: torch.Tensor | StateDict, center: torch.Tensor | StateDict) -> float:
    """``||params - center||_2`` over all floating-point entries, accumulated in float64."""
    if isinstance(params, torch.Tensor) and isinstance(center, torch.Tensor):
        return float(torch.linalg.vector_norm((params.double() - center.double()).flatten()))
    if isinstance(params, torch.Tensor) or isinstance(center, torch.Tensor):
        raise TypeError("params and center must both be tensors or both state dicts")
    total = 0.0
    for key in _float_keys(params):
        diff = params[key].double() - center[key].to(params[key].device).double()
        total += float((diff * diff).sum())
    return math.sqrt(total)


def _check_same_keys(params: StateDict, center: StateDict) -> None:
    if set(params) != set(center):
        missing = sorted(set(params) ^ set(center))
        raise ValueError(f"params and center hold different entries: {missing[:5]}")


@overload
def project_l2_ball(params: torch.Tensor, center: torch.Tensor, radius: float) -> torch.Tensor: ...
@overload
def project_l2_ball(
    params: StateDict, center: StateDict, radius: float
) -> dict[str, torch.Tensor]: ...
@overload
def project_l2_ball(params: nn.Module, center: StateDict, radius: float) -> nn.Module: ...
def project_l2_ball(
    params: torch.Tensor | StateDict | nn.Module,
    center: torch.Tensor | StateDict,
    radius: float,
) -> torch.Tensor | dict[str, torch.Tensor] | nn.Module:
    """Project onto the l2 ball of ``radius`` around ``center``.

    ``P(w) = c + delta (w - c) / ||w - c||`` if ``||w - c|| > delta``, else ``w`` unchanged.

    Parameters
    ----------
    params : torch.Tensor or state dict or nn.Module
        A flat tensor (a new tensor is returned), a state dict (a new dict; integer entries
        are passed through) or a module (projected **in place** and returned).
    center : torch.Tensor or state dict
        The ball's centre, of the same structure (a state dict for a module).
    radius : float
        ``delta >= 0``.

    Examples
    --------
    >>> project_l2_ball(torch.tensor([3.0, 4.0]), torch.zeros(2), 1.0)
    tensor([0.6000, 0.8000])
    """
    radius = check_radius(radius)
    if isinstance(params, nn.Module):
        if isinstance(center, torch.Tensor):
            raise TypeError("a module is projected around a state dict, not a flat tensor")
        state = params.state_dict()  # detached views sharing storage with the parameters
        _check_same_keys(state, center)
        _project_(_float_pairs(state, center), radius)
        return params
    if isinstance(params, torch.Tensor):
        if not isinstance(center, torch.Tensor) or center.shape != params.shape:
            raise ValueError("params and center must be tensors of the same shape")
        out_tensor = params.detach().clone()
        _project_([(out_tensor, center)], radius)
        return out_tensor
    if isinstance(center, torch.Tensor):
        raise TypeError("a state dict is projected around a state dict, not a flat tensor")
    _check_same_keys(params, center)
    out = {key: value.detach().clone() for key, value in params.items()}
    _project_(_float_pairs(out, center), radius)
    return out


def _float_pairs(state: StateDict, center: StateDict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(state[k], center[k].to(state[k].device, state[k].dtype)) for k in _float_keys(state)]


def _pairs_distance(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """``||w - c||_2`` over all pairs, squares summed in float64."""
    total = 0.0
    for value, c in pairs:
        diff = value.double() - c.double()
        total += float((diff * diff).sum())
    return math.sqrt(total)


# Acceptance bound, relative: a hair (~1e-12) inside the radius, so that every way of
# summing the float64 squares (ours, torch.linalg.vector_norm, numpy) sees the result inside.
_INSIDE = 1.0 - 2.0**-40
# After the inward rounding, at most this many more one-value steps of every off-centre entry
# toward the centre; the first already covers the float64 error of the target, so needing more
# would mean a bug, reported as such.
_MAX_INWARD_STEPS = 4

Pairs = list[tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def _project_(pairs: Pairs, radius: float) -> None:
    """In place: ``w <- c + (radius / ||w - c||)(w - c)`` when ``||w - c|| > radius``.

    The exact projection is the float64 target ``t = c + f (w - c)``, ``f = radius / ||w - c||``
    aimed ~1e-12 inside (``_INSIDE``). Factor and products are float64: a factor rounded to
    float32 cannot express the ~1e-8 relative corrections a near-boundary point needs, which
    is how an earlier version stalled for 32 identical iterations and then silently returned
    the centre (a zero update). ``t`` is rounded to the working dtype, which moves each
    entry by up to half an ulp and may land just outside. Then :func:`_round_inward_` moves
    the fewest entries that rounding pushed outward one representable value back toward the
    centre, so the result is inside and within ``||ulp(P)||_2`` of the boundary. Anything
    else raises: there is no silent fallback.
    """
    distance = _pairs_distance(pairs)
    if not math.isfinite(distance):
        raise ValueError(f"cannot project: distance to the centre is {distance}")
    if distance <= radius:
        return
    inside = radius * _INSIDE
    factor = inside / distance  # float64
    targets = []
    for value, c in pairs:
        center64 = c.double()
        target = center64 + factor * (value.double() - center64)
        value.copy_(target)  # round to nearest in the working dtype
        targets.append(target)
    if _pairs_distance(pairs) <= inside:
        return
    _round_inward_(pairs, targets, inside)
    for _ in range(_MAX_INWARD_STEPS):
        if _pairs_distance(pairs) <= inside:
            return
        for value, c in pairs:
            value.copy_(torch.nextafter(value, c))
    raise RuntimeError(
        f"projection onto the l2 ball of radius {radius} did not land inside: still "
        f"{_pairs_distance(pairs)} from the centre after rounding every entry toward it"
    )


def _round_inward_(pairs: Pairs, targets: list[torch.Tensor], inside: float) -> None:
    """Re-round toward the centre the entries rounding moved outward, largest gain first.

    An entry is *outward* when it is farther from the centre than its float64 target; its
    neighbour toward the centre (``nextafter``) is then nearer than the target. Re-rounding
    all of them puts every entry at most its target's distance from the centre, hence the
    point inside; re-rounding only the prefix (by decreasing reduction of ``||P - c||^2``)
    that covers the excess keeps the point closer to the boundary.
    """
    candidates, gains = [], []
    for (value, c), target in zip(pairs, targets, strict=True):
        v64, c64 = value.double(), c.double()
        inward = torch.nextafter(value, c)
        outward = (v64 - c64).abs() > (target - c64).abs()
        gain = (v64 - c64).square() - (inward.double() - c64).square()
        candidates.append((outward, inward))
        gains.append(torch.where(outward, gain, torch.zeros_like(gain)).flatten())
    flat = torch.cat(gains)
    order = torch.argsort(flat, descending=True, stable=True)
    covered = torch.cumsum(flat[order], dim=0)
    excess = _pairs_distance(pairs) ** 2 - inside**2
    limit = torch.tensor(excess, dtype=covered.dtype, device=covered.device)
    needed = int(torch.searchsorted(covered, limit)) + 1
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    chosen[order[: min(needed, int((flat > 0).sum()))]] = True
    offset = 0
    for (value, _), (outward, inward) in zip(pairs, candidates, strict=True):
        mask = chosen[offset : offset + value.numel()].view(value.shape) & outward
        value.copy_(torch.where(mask, inward, value))
        offset += value.numel()
    if _pairs_distance(pairs) > inside:  # the float64 excess was off by rounding: take all
        for (value, _), (outward, inward) in zip(pairs, candidates, strict=True):
            value.copy_(torch.where(outward, inward, value))


def replacement_scale(total_examples: float, own_examples: float) -> float:
    """Model-replacement boost ``n_S / n_i`` (spec 3c); ``n_S >= n_i > 0``."""
    total, own = float(total_examples), float(own_examples)
    if not (math.isfinite(total) and math.isfinite(own)) or own <= 0 or total < own:
        raise ValueError(
            f"replacement needs n_S >= n_i > 0 (got n_S={total_examples}, n_i={own_examples})"
        )
    return total / own


@overload
def model_replacement(update: torch.Tensor, scale: float) -> torch.Tensor: ...
@overload
def model_replacement(update: StateDict, scale: float) -> dict[str, torch.Tensor]: ...
def model_replacement(
    update: torch.Tensor | StateDict, scale: float
) -> torch.Tensor | dict[str, torch.Tensor]:
    """The boosted update ``scale * (w_i - w)`` (float entries of a state dict only).

    Send ``w + model_replacement(w_i - w, replacement_scale(n_S, n_i))``.
    """
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"replacement scale must be finite and > 0, got {scale}")
    if isinstance(update, torch.Tensor):
        return update * scale
    return {k: v * scale if v.is_floating_point() else v.clone() for k, v in update.items()}


def replace_model_(model: nn.Module, center: StateDict, scale: float) -> None:
    """In place: ``w_i <- w + scale (w_i - w)`` on the float entries of ``model``."""
    if scale <= 0 or not math.isfinite(scale):
        raise ValueError(f"replacement scale must be finite and > 0, got {scale}")
    state = model.state_dict()
    _check_same_keys(state, center)
    with torch.no_grad():
        for key in _float_keys(state):
            c = center[key].to(state[key].device, state[key].dtype)
            state[key].sub_(c).mul_(scale).add_(c)


def decayed_radius(radius: float, decay: float, server_round: int) -> float:
    """``delta_t = delta_0 gamma^t`` (spec 3b; ``gamma = 0.998`` in the paper's runs)."""
    radius = check_radius(radius)
    if not 0 < decay <= 1:
        raise ValueError(f"radius decay must be in (0, 1], got {decay}")
    return radius * decay ** max(0, server_round)


@dataclass(frozen=True)
class PGDTrain:
    """The PGD attacker's local training; a :class:`~flower_suite.clients.client_app.TrainFn`.

    Parameters
    ----------
    radius : float
        ``delta_0``, the ball radius around the received global model (spec name
        ``pgd_radius``; a guess of the server's norm bound).
    project_every : int, default 10
        Project after every ``project_every``-th SGD step (10 beat every step in the paper);
        the final step is always followed by a projection.
    radius_decay : float, default 1.0
        ``gamma`` in ``delta_t = delta_0 gamma^t`` (the paper uses 0.998).
    total_examples : float, optional
        ``n_S`` (examples of all clients of the round, or an estimate). When given, the
        trained model is sent with model replacement, boosted by ``n_S / n_i`` where
        ``n_i = len(data)`` is what the client reports.
    lr : float, optional
        The attacker's own learning rate (white-box); the round's ``config.lr`` otherwise.

    ``model`` must hold the received global model on entry; it holds the (projected,
    possibly boosted) attacker model on return.
    """

    radius: float
    project_every: int = 10
    radius_decay: float = 1.0
    total_examples: float | None = None
    lr: float | None = None

    def __post_init__(self) -> None:
        check_radius(self.radius)
        decayed_radius(self.radius, self.radius_decay, 0)
        if self.project_every < 1:
            raise ValueError(f"project_every must be >= 1, got {self.project_every}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be finite and > 0, got {self.lr}")

    def __call__(
        self,
        model: nn.Module,
        data: ArrayDataset,
        config: TrainConfig,
        *,
        seed: int,
        device: torch.device | None = None,
        context: Any = None,
        server_round: int = 0,
    ) -> TrainResult:
        return pgd_train(
            model,
            data,
            config if self.lr is None else _with_lr(config, self.lr),
            seed=seed,
            device=device,
            radius=decayed_radius(self.radius, self.radius_decay, server_round),
            project_every=self.project_every,
            total_examples=self.total_examples,
        )


def _with_lr(config: TrainConfig, lr: float) -> TrainConfig:
    from dataclasses import replace

    return replace(config, lr=lr)


def pgd_train(
    model: nn.Module,
    data: ArrayDataset,
    config: TrainConfig,
    *,
    seed: int,
    radius: float,
    project_every: int = 10,
    total_examples: float | None = None,
    device: torch.device | None = None,
) -> TrainResult:
    """SGD on ``data`` projected onto ``B(w, radius)``; optionally boosted for replacement.

    Uses :func:`flower_suite.training.train` (same optimiser, batches and seed as an honest
    client) with a step hook that projects after every ``project_every``-th step, then
    projects once more after the last step and, if ``total_examples`` (``n_S``) is given,
    applies ``w + (n_S / len(data)) (w_i - w)``.
    """
    radius = check_radius(radius)
    if project_every < 1:
        raise ValueError(f"project_every must be >= 1, got {project_every}")
    scale = None if total_examples is None else replacement_scale(total_examples, len(data))
    device = device or select_device()
    model.to(device)
    # The ball's centre: the received global model, snapshotted before any step.
    center = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def hook(module: nn.Module, steps: int) -> None:
        if steps % project_every == 0:
            project_l2_ball(module, center, radius)

    result = train(model, data, config, seed=seed, device=device, step_hook=hook)
    project_l2_ball(model, center, radius)  # always after the last step (spec pitfall 5)
    if scale is not None:
        replace_model_(model, center, scale)
    return result
