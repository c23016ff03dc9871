"""Byzantine update attacks over flattened ``(n, d)`` updates (framework-free).

Every attack maps the attackers' own true updates ``own`` (k, d) (update = trained model -
received global model, flattened as in :mod:`flower_suite.aggregation`) and, for omniscient
attacks, the round's honest updates ``honest`` (m, d) to the k malicious updates they send.

Threat models (who knows what):

================  ===========================================  ===============================
attack            definition                                   attacker knows
================  ===========================================  ===============================
alie              ``mu - z * sigma`` (coordinate-wise)         all honest updates (omniscient)
ipm               ``-epsilon * mu``                            all honest updates (omniscient)
reverse_gradient  ``-c * g``                                   its own update only (local)
sign_flip         ``-g``                                       its own update only (local)
constant          ``value * 1``                                the model size only (local)
gaussian_noise    ``N(mean, std^2 I)`` (or ``g +`` noise)      the model size only (local)
================  ===========================================  ===============================

``mu`` and ``sigma`` are the coordinate-wise mean and population standard deviation
(``ddof = 0``, spec ``robust-aggregation.md`` pitfall 10) of the honest updates. Omniscient
attacks need the simulation-side :class:`flower_suite.byzantine_injector.ByzantineInjector`;
local attacks also work as a client mod. Label flipping is a data-level attack
(:func:`flower_suite.attacks.poison.flip_labels`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import torch

from flower_suite.registry import Registry


def _check_finite(name: str, value: float, *, positive: bool = False) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def _check_matrix(name: str, updates: torch.Tensor) -> None:
    if updates.ndim != 2 or updates.shape[0] == 0 or updates.shape[1] == 0:
        raise ValueError(
            f"{name}: expected a non-empty 2-D (n, d) tensor, got {tuple(updates.shape)}"
        )
    if not updates.is_floating_point():
        raise ValueError(f"{name}: updates must be floating point, got {updates.dtype}")
    if not torch.isfinite(updates).all():
        raise ValueError(f"{name}: updates contain NaN or Inf")


def _check_vector(name: str, update: torch.Tensor) -> None:
    if not update.is_floating_point():
        raise ValueError(f"{name}: update must be floating point, got {update.dtype}")
    if not torch.isfinite(update).all():
        raise ValueError(f"{name}: update contains NaN or Inf")


def alie_z(n: int, f: int) -> float:
    """The largest undetected deviation ``z_max`` of ALIE (Baruch et al., NeurIPS 2019).

    ``s = floor(n/2 + 1) - f`` is the number of honest workers the attackers need on their
    side for a majority, and ``z_max = Phi^{-1}((n - s) / n)`` with ``Phi`` the standard
    normal CDF. For ``n = 45, f = 5``: ``s = 18`` and ``z = Phi^{-1}(0.6) = 0.2533``.

    Parameters
    ----------
    n : int
        Number of workers in the round (honest + Byzantine), ``n >= 3``.
    f : int
        Number of Byzantine workers, ``0 <= f < n/2``.

    Examples
    --------
    >>> round(alie_z(45, 5), 4)
    0.2533
    """
    if n < 3:
        # n = 2, f = 0 gives s = 2 and Phi^-1(0) = -inf.
        raise ValueError(f"alie: requires n >= 3 workers (got n={n})")
    if f < 0 or 2 * f >= n:
        raise ValueError(f"alie: requires 0 <= f < n/2 (got n={n}, f={f})")
    s = math.floor(n / 2 + 1) - f
    return NormalDist().inv_cdf((n - s) / n)


def _mean_std(updates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # float64: the std of nearly equal updates loses all digits in float32.
    x = updates.to(torch.float64)
    return x.mean(dim=0), x.std(dim=0, correction=0)


def alie(
    honest_updates: torch.Tensor,
    n: int | None = None,
    f: int | None = None,
    *,
    z: float | None = None,
) -> torch.Tensor:
    """ "A little is enough" (Baruch et al., 2019): ``mu - z * sigma`` per coordinate.

    ``mu``/``sigma`` are the coordinate-wise mean and population std of ``honest_updates``.
    ``z`` defaults to :func:`alie_z` ``(n, f)``. The spec writes the attack as
    ``mu + z * sigma``; the two differ only by the sign of ``z`` (pass ``-z`` for that form).

    Parameters
    ----------
    honest_updates : torch.Tensor
        ``(m, d)`` honest updates of the round (or the colluders' own, for the weaker
        "estimate from own gradients" variant).
    n, f : int, optional
        Workers and Byzantine workers of the round, used only when ``z`` is None.
    z : float, optional
        An explicit deviation (the DETOX reference code uses 1.0).

    Returns
    -------
    torch.Tensor
        The ``(d,)`` malicious update, in the input dtype.
    """
    _check_matrix("alie", honest_updates)
    if z is None:
        if n is None or f is None:
            raise ValueError("alie: give either z or both n and f")
        z = alie_z(n, f)
    z = _check_finite("alie: z", z)
    mu, sigma = _mean_std(honest_updates)
    return (mu - z * sigma).to(honest_updates.dtype)


def ipm(honest_updates: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    """Inner-product manipulation (Xie, Koyejo and Gupta, UAI 2019): ``-epsilon * mu``.

    With a small ``epsilon`` (0.1 against Krum in the paper) the malicious vector stays close
    to the honest ones, while making the inner product of the aggregate with the true
    gradient negative once it is selected or averaged in.

    Returns the ``(d,)`` malicious update in the input dtype.
    """
    _check_matrix("ipm", honest_updates)
    epsilon = _check_finite("ipm: epsilon", epsilon, positive=True)
    mu = honest_updates.to(torch.float64).mean(dim=0)
    return (-epsilon * mu).to(honest_updates.dtype)


def reverse_gradient(update: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    """Reverse gradient: ``-c * g`` with ``c > 0`` (DETOX experiments; ``c = 100``, seed:2153)."""
    _check_vector("reverse_gradient", update)
    scale = _check_finite("reverse_gradient: scale", scale, positive=True)
    return update * -scale


def sign_flip(update: torch.Tensor) -> torch.Tensor:
    """Sign flipping: ``-g`` (Karimireddy et al., 2021), i.e. reverse gradient with ``c = 1``."""
    _check_vector("sign_flip", update)
    return -update


def constant(
    update_shape: Sequence[int] | torch.Size,
    value: float = -1.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Constant attack: every entry ``value`` (-1 against signSGD, Chapter 7; -100, Chapter 6)."""
    value = _check_finite("constant: value", value)
    return torch.full(tuple(update_shape), value, dtype=dtype, device=device)


def gaussian_noise(
    shape: Sequence[int] | torch.Size,
    std: float = 1.0,
    generator: torch.Generator | None = None,
    *,
    mean: float = 0.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Gaussian attack: a sample of ``N(mean, std^2 I)`` (drawn in float64, seeded by
    ``generator``; on the CPU unless ``device`` says otherwise)."""
    std = _check_finite("gaussian_noise: std", std)
    mean = _check_finite("gaussian_noise: mean", mean)
    if std < 0:
        raise ValueError(f"gaussian_noise: std must be >= 0, got {std}")
    noise = torch.randn(tuple(shape), generator=generator, dtype=torch.float64)
    return (noise * std + mean).to(dtype=dtype, device=device)


# --- The uniform call shape used by mods, the injector and configs ---------------------------

Generator = torch.Generator | None
AttackFn = Callable[[torch.Tensor, torch.Tensor | None, torch.Generator | None], torch.Tensor]


@dataclass(frozen=True)
class UpdateAttack:
    """A configured attack: ``attack(own, honest=None, generator=None) -> (k, d)``.

    ``own`` holds the k attackers' true updates (one row each); ``honest`` the round's m
    honest updates, required when ``needs_honest`` (omniscient attacks). Colluding attacks
    (ALIE, IPM) send the same row from every attacker.
    """

    name: str
    needs_honest: bool
    threat_model: str
    fn: AttackFn

    def __call__(
        self,
        own: torch.Tensor,
        honest: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        _check_matrix(self.name, own)
        if self.needs_honest:
            if honest is None:
                raise ValueError(
                    f"{self.name} needs the round's honest updates (omniscient attacker); "
                    "use flower_suite.attacks.ByzantineInjector, not a client mod"
                )
            _check_matrix(self.name, honest)
            if honest.shape[1] != own.shape[1]:
                raise ValueError(
                    f"{self.name}: honest updates have d={honest.shape[1]}, own d={own.shape[1]}"
                )
        out = self.fn(own, honest, generator)
        return out.to(dtype=own.dtype, device=own.device)


OMNISCIENT = "omniscient: sees every honest update of the round (simulation injector)"
LOCAL = "local: knows only its own update / the model size (client mod)"
COLLUDING = "colluding: sees the colluders' own updates"

BYZANTINE_ATTACKS: Registry[UpdateAttack] = Registry("byzantine attack")


@BYZANTINE_ATTACKS.register("alie")
def make_alie(
    *,
    z: float | None = None,
    n: int | None = None,
    f: int | None = None,
    source: Literal["honest", "own"] = "honest",
) -> UpdateAttack:
    """ALIE; ``n``/``f`` default to the round's (honest + attackers, attackers) counts.

    ``source = "own"`` estimates ``mu, sigma`` from the colluders' own true updates (the
    non-omniscient variant, needing at least two colluders for a non-zero ``sigma``).
    """
    if source not in ("honest", "own"):
        raise ValueError(f"alie: source must be 'honest' or 'own', got {source!r}")
    if z is not None:
        _check_finite("alie: z", z)

    def fn(
        own: torch.Tensor, honest: torch.Tensor | None, _: torch.Generator | None
    ) -> torch.Tensor:
        k = own.shape[0]
        stats = honest if source == "honest" and honest is not None else own
        rounds_n = n if n is not None else k + (0 if honest is None else honest.shape[0])
        row = alie(stats, rounds_n, f if f is not None else k, z=z)
        return row.expand(k, -1).clone()

    threat = OMNISCIENT if source == "honest" else COLLUDING
    return UpdateAttack("alie", source == "honest", threat, fn)


@BYZANTINE_ATTACKS.register("ipm")
def make_ipm(*, epsilon: float = 0.1) -> UpdateAttack:
    """IPM with ``epsilon`` (0.1 by default; Xie et al. use 0.1 and large values like 100)."""
    _check_finite("ipm: epsilon", epsilon, positive=True)

    def fn(
        own: torch.Tensor, honest: torch.Tensor | None, _: torch.Generator | None
    ) -> torch.Tensor:
        assert honest is not None  # checked by UpdateAttack
        return ipm(honest, epsilon).expand(own.shape[0], -1).clone()

    return UpdateAttack("ipm", True, OMNISCIENT, fn)


@BYZANTINE_ATTACKS.register("reverse_gradient")
def make_reverse_gradient(*, scale: float = 100.0) -> UpdateAttack:
    """Reverse gradient ``-scale * g`` for each attacker's own update."""
    _check_finite("reverse_gradient: scale", scale, positive=True)
    return UpdateAttack(
        "reverse_gradient", False, LOCAL, lambda own, _h, _g: reverse_gradient(own, scale)
    )


@BYZANTINE_ATTACKS.register("sign_flip")
def make_sign_flip() -> UpdateAttack:
    """Sign flip ``-g`` for each attacker's own update."""
    return UpdateAttack("sign_flip", False, LOCAL, lambda own, _h, _g: sign_flip(own))


@BYZANTINE_ATTACKS.register("constant")
def make_constant(*, value: float = -1.0) -> UpdateAttack:
    """Every entry of every malicious update is ``value``."""
    _check_finite("constant: value", value)
    return UpdateAttack(
        "constant", False, LOCAL, lambda own, _h, _g: constant(own.shape, value, dtype=own.dtype)
    )


@BYZANTINE_ATTACKS.register("gaussian_noise")
def make_gaussian_noise(
    *, std: float = 1.0, mean: float = 0.0, additive: bool = False
) -> UpdateAttack:
    """Send ``N(mean, std^2 I)`` samples, or (``additive``) the own update plus that noise."""
    std = _check_finite("gaussian_noise: std", std)
    if std < 0:
        raise ValueError(f"gaussian_noise: std must be >= 0, got {std}")

    def fn(own: torch.Tensor, _h: torch.Tensor | None, gen: torch.Generator | None) -> torch.Tensor:
        noise = gaussian_noise(own.shape, std, gen, mean=mean, dtype=torch.float64)
        noise = noise.to(own.device)
        return (own.to(torch.float64) + noise if additive else noise).to(own.dtype)

    return UpdateAttack("gaussian_noise", False, LOCAL, fn)
