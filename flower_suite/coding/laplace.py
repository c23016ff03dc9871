"""The Laplace mechanism option of coded prediction serving (ApproxIFER reproduction report §DP;
spec §7), with the ℓ1 sensitivity its proof needs.

``M(D) = f(D) + N`` with ``N`` i.i.d. Laplace(0, ``b``), ``b = Δ1/ε``, standard deviation
``√2·Δ1/ε``, is ε-DP when ``Δ1 = max ||f(D) - f(D')||_1`` over neighbouring inputs (one row of
one query changed). The report defines Δ with the ℓ2 norm, but its Theorem 1 proof bounds the
density ratio with the ℓ1 norm, so the mechanism here takes ``Δ1`` only.

Bound ``Δ1`` by construction: a worker that releases class probabilities changes its output by
at most :data:`PROBABILITY_L1_SENSITIVITY` = 2 in ℓ1; logits must be clipped first
(:func:`clip_l1`, which makes ``Δ1 = 2·radius``). Caveats (spec §7): each returned ``Ỹ_i`` is
a separate release (``|F|·ε`` in total under basic composition; decoding is post-processing);
workers still see the coded queries; Laplace noise looks like Byzantine errors to the locator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

PROBABILITY_L1_SENSITIVITY = 2.0
DP_PLACES: tuple[str, ...] = ("worker", "master")
DPPlace = Literal["worker", "master"]


@dataclass(frozen=True)
class LaplaceMechanism:
    """ε-DP Laplace noise for one release of ℓ1 sensitivity ``l1_sensitivity``.

    ``where = "worker"``: every worker adds noise to the prediction it returns (the report's
    setting); ``"master"``: the master adds it once to the decoded outputs (then
    ``l1_sensitivity`` must bound the decoded batch, see :func:`decoded_l1_sensitivity`).
    """

    epsilon: float
    l1_sensitivity: float = PROBABILITY_L1_SENSITIVITY
    where: str = "worker"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError(f"dp_epsilon must be a finite number > 0, not {self.epsilon}")
        if not (math.isfinite(self.l1_sensitivity) and self.l1_sensitivity > 0):
            raise ValueError(
                f"dp_l1_sensitivity must be a finite number > 0, not {self.l1_sensitivity}"
            )
        if self.where not in DP_PLACES:
            raise ValueError(f"dp_where must be one of {DP_PLACES}, not {self.where!r}")

    @property
    def scale(self) -> float:
        """Laplace scale ``b = Δ1/ε``."""
        return self.l1_sensitivity / self.epsilon

    @property
    def std(self) -> float:
        """Standard deviation of each noise entry, ``√2·Δ1/ε``."""
        return math.sqrt(2.0) * self.scale

    def apply(self, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``values + Laplace(0, b)`` noise, in float64; refuses non-finite values."""
        values = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError("values to privatise contain NaN or inf")
        return values + rng.laplace(0.0, self.scale, size=values.shape)

    def composed_epsilon(self, num_releases: int) -> float:
        """Total ε of ``num_releases`` releases under basic composition (``|F|·ε``)."""
        if num_releases < 0:
            raise ValueError(f"num_releases must be >= 0, not {num_releases}")
        return num_releases * self.epsilon


def clip_l1(values: np.ndarray, radius: float) -> np.ndarray:
    """Scale each row (last axis) to ℓ1 norm at most ``radius``: any two rows then differ by at
    most ``2·radius`` in ℓ1, the sensitivity to declare for clipped logits."""
    if not (math.isfinite(radius) and radius > 0):
        raise ValueError(f"radius must be a finite number > 0, not {radius}")
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("values to clip contain NaN or inf")
    norms = np.abs(values).sum(axis=-1, keepdims=True)
    return values * np.minimum(1.0, radius / np.maximum(norms, np.finfo(np.float64).tiny))


def decoded_l1_sensitivity(decoding: np.ndarray, worker_l1_sensitivity: float) -> float:
    """ℓ1 sensitivity of a whole decoded batch ``B·Ỹ`` when each worker output has sensitivity
    ``worker_l1_sensitivity`` (one changed query can move every coded query, hence every
    ``Ỹ_i``): ``Δ1 · Σ_{j,m} |B_jm|``. Use it for ``where = "master"``."""
    matrix = np.asarray(decoding, dtype=np.float64)
    if matrix.ndim != 2 or not np.all(np.isfinite(matrix)):
        raise ValueError("decoding must be a finite 2-D matrix")
    return float(worker_l1_sensitivity * np.abs(matrix).sum())
