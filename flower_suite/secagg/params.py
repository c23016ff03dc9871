"""Protocol parameters: user settings, per-round resolution, validation, parameter search.

Spec ``secagg.md`` section 2 (the table of parameters and their validity checks) and section 3
(choosing ``k`` and ``t``). Names follow Flower's ``SecAggPlusWorkflow`` (``num_shares``,
``reconstruction_threshold``, ``clipping_range``, ``quantization_range``, ``modulus_range``,
``max_weight``); Salvia's names (``share_num``, ``threshold``, ``target_range``, ``mod_range``,
``max_weights_factor``) are accepted as aliases by :meth:`SecAggConfig.from_kwargs`.

Every check runs before stage 0 and raises ``ValueError`` naming the parameter; Flower lacks
several of them (``clipping_range <= 0``, ``M < n*W*T``, a weight above ``max_weight``). The
same checks run on every client when it parses the server's setup message, including the safe
floor ``t > k/2`` (spec section 2's SHOULD made a MUST: below it a server that lies about
dropouts can reconstruct both secrets of one client).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeGuard

import numpy as np

ALIASES: dict[str, str] = {
    "share_num": "num_shares",
    "threshold": "reconstruction_threshold",
    "target_range": "quantization_range",
    "mod_range": "modulus_range",
    "max_weights_factor": "max_weight",
}

MAX_MODULUS_BITS = 64
DEFAULT_MIN_MODULUS_BITS = 32


def _is_int(value: object) -> TypeGuard[int | np.integer[Any]]:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _integral(name: str, value: object) -> int:
    """``value`` as an int; integral floats (Flower's ``max_weight=1000.0``) are accepted."""
    if _is_int(value):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(f"{name} must be an integer, got {value!r}")


@dataclass(frozen=True)
class SecAggParams:
    """The resolved parameters of one round (the stage-0 broadcast, spec section 6).

    ``n`` sampled clients, ``k`` shares per secret (neighbours incl. self; ``k = n`` is
    SecAgg), threshold ``t``, minimum survivors ``m``, clipping range ``c``, quantization
    levels ``T`` (values ``0..T-1``), modulus ``M = 2**mod_bits``, weight cap ``W``.
    """

    n: int
    k: int
    t: int
    m: int
    c: float
    T: int
    mod_bits: int
    W: int
    stochastic_rounding: bool = True
    clip_warn_fraction: float = 0.01

    def __post_init__(self) -> None:
        validate(self)

    @property
    def modulus(self) -> int:
        """``M = 2**mod_bits``."""
        return 1 << self.mod_bits

    @property
    def is_full_graph(self) -> bool:
        """SecAgg (complete graph) rather than SecAgg+ (Harary graph)."""
        return self.k == self.n

    @property
    def dtype(self) -> np.dtype:
        """Native unsigned type whose wraparound reduces modulo ``2**32`` or ``2**64``; ``M``
        divides it, so sums stay exact modulo ``M`` (spec section 5, step 4)."""
        return np.dtype(np.uint32 if self.mod_bits <= 32 else np.uint64)

    @property
    def packed_bytes(self) -> int:
        """Bytes per entry on the wire: the significant ``log2 M`` bits, rounded up."""
        return (self.mod_bits + 7) // 8

    @property
    def step(self) -> float:
        """Quantization step ``Δ = 2c / (T - 1)``."""
        return 2.0 * self.c / (self.T - 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SecAggParams:
        names = {f.name for f in fields(cls)}
        missing = names - set(data)
        if missing:
            raise ValueError(f"secagg parameters: missing {sorted(missing)}")
        return cls(**{name: data[name] for name in names})


def validate(p: SecAggParams) -> None:
    """Spec section 2's checks; the message names the parameter (Flower's name first)."""
    for name in ("n", "k", "t", "m", "T", "mod_bits", "W"):
        if not _is_int(getattr(p, name)):
            raise ValueError(f"{name} must be an integer, got {getattr(p, name)!r}")
    if p.n < 3:
        raise ValueError(
            f"number of sampled clients must be >= 3 for secure aggregation, got {p.n}"
        )
    if not 3 <= p.k <= p.n:
        raise ValueError(f"num_shares (k) must satisfy 3 <= k <= n = {p.n}, got {p.k}")
    if p.k < p.n and p.k % 2 == 0:
        raise ValueError(
            f"num_shares (k) must be odd when k < n (ring/Harary graph), got k={p.k}, n={p.n}"
        )
    if not 2 <= p.t <= p.k:
        raise ValueError(
            f"reconstruction_threshold (t) must satisfy 2 <= t <= k = {p.k}, got {p.t}"
        )
    if 2 * p.t <= p.k:
        # With t <= k/2 two disjoint groups of t holders exist: a server that tells one group
        # "u dropped" and the other "u survived" collects both u's mask key and its self-mask
        # seed, i.e. u's plain input, although every honest holder answers only one question.
        raise ValueError(
            f"reconstruction_threshold (t) must be > k/2 = {p.k / 2:g} (safe floor against a "
            f"server lying about dropouts), got t = {p.t} of k = {p.k}"
        )
    if not 2 <= p.m <= p.n:
        raise ValueError(f"min_num (m) must satisfy 2 <= m <= n = {p.n}, got {p.m}")
    if not (isinstance(p.c, int | float) and math.isfinite(p.c) and p.c > 0):
        raise ValueError(f"clipping_range must be finite and > 0, got {p.c!r}")
    if p.T < 2:
        raise ValueError(f"quantization_range (T) must be an integer >= 2, got {p.T}")
    if p.W < 1:
        raise ValueError(f"max_weight (W) must be an integer >= 1, got {p.W}")
    if not 1 <= p.mod_bits <= MAX_MODULUS_BITS:
        raise ValueError(f"modulus_range must be a power of two <= 2**64, got 2**{p.mod_bits}")
    need = p.n * p.W * p.T
    if p.modulus < need:
        raise ValueError(
            f"modulus_range M = 2**{p.mod_bits} is too small: the sum of n = {p.n} inputs "
            f"weighted up to max_weight = {p.W} with quantization_range = {p.T} levels needs "
            f"M >= n*W*T = {need} (Salvia's overflow check); lower T or W, or raise M"
        )
    if not 0.0 <= p.clip_warn_fraction <= 1.0:
        raise ValueError(f"clip_warn_fraction must be in [0, 1], got {p.clip_warn_fraction}")


@dataclass(frozen=True)
class SecAggConfig:
    """User settings that do not depend on the number of sampled clients.

    Parameters
    ----------
    num_shares : int | float (default: 1.0)
        Shares per secret, i.e. neighbours per client including itself (``k``). A float is a
        fraction of the sampled clients (Flower's rule: rounded, made odd, at least 3, else
        the full graph); ``1.0`` is SecAgg (``k = n``). See :func:`suggest_parameters`.
    reconstruction_threshold : int | float | None (default: None)
        Shares needed to reconstruct (``t``). A float is a fraction of ``k`` (at least 2);
        ``None`` gives ``floor(k/2) + 1``. Must exceed ``k/2`` (checked here and by every
        client): below it a server lying about dropouts could unmask one client's input.
    min_num, min_frac : int | None, float | None (default: None)
        Fewest clients that must survive every stage; with both, the least restrictive
        ``min(min_num, ceil(min_frac * n))`` wins (Salvia). Default: ``t``.
    clipping_range : float (default: 8.0)
        Update entries are clipped to ``[-c, c]`` before quantization (counted and reported).
    quantization_range : int (default: 2**22)
        Quantization levels ``T`` (integers ``0..T-1``).
    modulus_range : int | None (default: None)
        Power of two ``M``; default the smallest power of two ``>= n*W*T``, at least ``2**32``.
    max_weight : int (default: 1000)
        Largest integer weight ``W`` (a client's example count) a client may contribute; a
        client refuses (drops out of the round) rather than cap a larger, fractional or
        non-finite weight (:func:`~flower_suite.secagg.quantize.client_weight`). For the
        unweighted mean use ``1`` with clients that weigh themselves 1
        (``make_secagg_mod(weight_fn=unit_weight)``).
    stochastic_rounding : bool (default: True)
        Unbiased stochastic rounding; ``False`` rounds down after adding 1/2 (nearest).
    clip_warn_fraction : float (default: 0.01)
        A client warns when more than this fraction of its entries was clipped.
    """

    num_shares: int | float = 1.0
    reconstruction_threshold: int | float | None = None
    min_num: int | None = None
    min_frac: float | None = None
    clipping_range: float = 8.0
    quantization_range: int = 1 << 22
    modulus_range: int | None = None
    max_weight: int = 1000
    stochastic_rounding: bool = True
    clip_warn_fraction: float = 0.01

    def __post_init__(self) -> None:
        # n-independent checks now, so a bad setting fails at construction, not in round 1.
        if isinstance(self.num_shares, bool) or not isinstance(self.num_shares, int | float):
            raise ValueError(f"num_shares must be an int or a float, got {self.num_shares!r}")
        if isinstance(self.num_shares, float) and not 0.0 < self.num_shares <= 1.0:
            raise ValueError(f"num_shares as a fraction must be in (0, 1], got {self.num_shares}")
        if _is_int(self.num_shares) and self.num_shares < 3:
            raise ValueError(f"num_shares must be >= 3, got {self.num_shares}")
        t = self.reconstruction_threshold
        if t is not None:
            if isinstance(t, bool) or not isinstance(t, int | float):
                raise ValueError(f"reconstruction_threshold must be an int or a float, got {t!r}")
            if isinstance(t, float) and not 0.5 < t <= 1.0:
                raise ValueError(
                    f"reconstruction_threshold as a fraction must be in (0.5, 1] (t > k/2), got {t}"
                )
            if _is_int(t) and t < 2:
                raise ValueError(f"reconstruction_threshold must be >= 2, got {t}")
        if self.min_num is not None and (not _is_int(self.min_num) or self.min_num < 2):
            raise ValueError(f"min_num must be an integer >= 2, got {self.min_num!r}")
        if self.min_frac is not None and not 0.0 < self.min_frac <= 1.0:
            raise ValueError(f"min_frac must be in (0, 1], got {self.min_frac!r}")
        c = self.clipping_range
        if isinstance(c, bool) or not isinstance(c, int | float) or not math.isfinite(c) or c <= 0:
            raise ValueError(f"clipping_range must be finite and > 0, got {c!r}")
        if _integral("quantization_range", self.quantization_range) < 2:
            raise ValueError(f"quantization_range must be >= 2, got {self.quantization_range}")
        if _integral("max_weight", self.max_weight) < 1:
            raise ValueError(f"max_weight must be >= 1, got {self.max_weight}")
        if self.modulus_range is not None:
            m = _integral("modulus_range", self.modulus_range)
            if m < 2 or m & (m - 1):
                raise ValueError(f"modulus_range must be a power of two, got {m}")
            if m > 1 << MAX_MODULUS_BITS:
                raise ValueError(f"modulus_range must be <= 2**64, got {m}")
        if not 0.0 <= self.clip_warn_fraction <= 1.0:
            raise ValueError(f"clip_warn_fraction must be in [0, 1], got {self.clip_warn_fraction}")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> SecAggConfig:
        """Build from Flower's names or Salvia's aliases (``share_num``, ``threshold``, ...)."""
        names = {f.name for f in fields(cls)}
        resolved: dict[str, Any] = {}
        for key, value in kwargs.items():
            name = ALIASES.get(key, key)
            if name not in names:
                raise ValueError(f"unknown secure-aggregation setting {key!r}")
            if name in resolved:
                raise ValueError(f"secure-aggregation setting {name!r} given twice (alias {key!r})")
            resolved[name] = value
        return cls(**resolved)

    def resolve(self, n: int) -> SecAggParams:
        """The round's parameters for ``n`` sampled clients (all spec section 2 checks)."""
        if not _is_int(n) or n < 3:
            raise ValueError(f"secure aggregation needs at least 3 sampled clients, got n={n}")
        k = resolve_num_shares(self.num_shares, n)
        t = resolve_threshold(self.reconstruction_threshold, k)
        m = resolve_min_num(self.min_num, self.min_frac, n, default=t)
        levels = _integral("quantization_range", self.quantization_range)
        cap = _integral("max_weight", self.max_weight)
        if self.modulus_range is None:
            bits = max(DEFAULT_MIN_MODULUS_BITS, (n * cap * levels - 1).bit_length())
            if bits > MAX_MODULUS_BITS:
                raise ValueError(
                    f"modulus_range: n*W*T = {n * cap * levels} exceeds 2**64; lower "
                    f"quantization_range or max_weight"
                )
        else:
            bits = _integral("modulus_range", self.modulus_range).bit_length() - 1
        return SecAggParams(
            n=n,
            k=k,
            t=t,
            m=m,
            c=float(self.clipping_range),
            T=levels,
            mod_bits=bits,
            W=cap,
            stochastic_rounding=bool(self.stochastic_rounding),
            clip_warn_fraction=float(self.clip_warn_fraction),
        )


def resolve_num_shares(num_shares: int | float, n: int) -> int:
    """``k`` from an int or a fraction of ``n`` (Flower's rounding: odd, >= 3, else ``n``)."""
    if isinstance(num_shares, float):
        k = round(num_shares * n)
        if k < n and k % 2 == 0:
            k += 1
        if k < 3 or k > n:
            k = n
        return k
    if num_shares > n:
        raise ValueError(f"num_shares (k) = {num_shares} exceeds the {n} sampled clients")
    return int(num_shares)


def resolve_threshold(threshold: int | float | None, k: int) -> int:
    """``t`` from an int, a fraction of ``k`` (at least 2) or the default ``floor(k/2)+1``."""
    if threshold is None:
        return k // 2 + 1
    if isinstance(threshold, float):
        return max(2, round(threshold * k))
    return int(threshold)


def resolve_min_num(min_num: int | None, min_frac: float | None, n: int, *, default: int) -> int:
    """Salvia's rule: with both given the least restrictive wins (spec section 2)."""
    candidates = []
    if min_num is not None:
        candidates.append(int(min_num))
    if min_frac is not None:
        candidates.append(math.ceil(min_frac * n))
    return min(candidates) if candidates else default


def suggest_parameters(
    n: int,
    corrupt_fraction: float,
    dropout_fraction: float,
    *,
    security_bits: float = 40.0,
    correctness_bits: float = 20.0,
) -> tuple[int, int]:
    """``(k, t)`` for SecAgg+ with ``n`` clients (spec section 3; Bell et al. 2020).

    The search of Google's parameter finder, semi-honest setting: the smallest even degree
    ``d`` (neighbours excluding the client itself) such that

    (a) a union bound over the ``n (n - d - 1) / 2`` pairs of disjoint runs of ``d/2`` ring
        positions, all of them corrupted or dropped (the only way to disconnect the honest
        survivors of a Harary graph), is below ``2**-(security_bits + 1)``, and
    (b) some threshold ``t`` has ``P[#corrupt neighbours >= t] <= 2**-(security_bits+1) / n``
        and ``P[#surviving neighbours < t] <= 2**-correctness_bits / n`` (hypergeometric
        tails); the smallest such ``t`` (at least 2) is returned.

    Unlike Google's finder, ``t`` is never below the safe floor ``floor(k/2) + 1`` (which
    :func:`validate` and every client enforce), so correctness (b) is checked at the raised
    threshold and the degree grows where dropouts are frequent.

    Returns ``k = d + 1`` (the self-edge). When no ``d < n - 1`` works, returns the full graph
    ``(n, floor(n/2) + 1)``, as SecAgg.
    """
    from scipy.stats import hypergeom

    if not _is_int(n) or n < 3:
        raise ValueError(f"n must be an integer >= 3, got {n!r}")
    if not 0.0 <= corrupt_fraction < 1.0:
        raise ValueError(f"corrupt_fraction must be in [0, 1), got {corrupt_fraction}")
    if not 0.0 <= dropout_fraction < 1.0:
        raise ValueError(f"dropout_fraction must be in [0, 1), got {dropout_fraction}")
    if corrupt_fraction + dropout_fraction > 0.9:
        raise ValueError(
            "corrupt_fraction + dropout_fraction must be <= 0.9 in the semi-honest setting, "
            f"got {corrupt_fraction} + {dropout_fraction}"
        )
    small = 1e-14  # keeps float rounding from flipping floor/ceil in the insecure direction
    corrupt = math.floor((corrupt_fraction + small) * n)
    dropped = math.floor((dropout_fraction + small) * n)
    bad = corrupt + dropped
    survivors = math.ceil((1.0 - dropout_fraction - small) * n)
    log_security = -(security_bits + 1.0) * math.log(2.0)
    p_security = 2.0 ** -(security_bits + 1.0) / n
    p_correct = 2.0**-correctness_bits / n
    for d in range(2, n - 1, 2):
        if d <= bad:
            # log of  #pairs * C(bad, d) / C(n, d)  (both runs of d/2 positions all bad)
            log_p = (
                math.log(n)
                + math.log(n - d - 1)
                - math.log(2.0)
                + math.lgamma(bad + 1)
                + math.lgamma(n - d + 1)
                - math.lgamma(n + 1)
                - math.lgamma(bad - d + 1)
            )
            if log_p >= log_security:
                continue
        # smallest t >= the floor with P[#corrupt >= t] <= p_security (sf(t-1) <= p_security);
        # sf decreases in t, so searching upwards from the floor finds it
        corrupt_nb = hypergeom(n, corrupt, d)
        t = max(2, (d + 1) // 2 + 1)
        while t <= d and corrupt_nb.sf(t - 1) > p_security:
            t += 1
        if t > d:
            continue
        # correctness: P[#surviving neighbours < t] = cdf(t - 1) must be small
        if hypergeom(n, survivors, d).cdf(t - 1) <= p_correct:
            return d + 1, t
    return n, n // 2 + 1
