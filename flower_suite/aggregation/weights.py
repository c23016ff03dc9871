"""Client-reported weights, screened as a set before any rule uses them.

Weights are example counts that clients report about themselves (FedAvg, McMahan et al. 2017;
RFA's ``alpha_i``, Pillutla et al. 2019). Each is checked on its own by the reply validator
(finite, > 0); as a set they have two more failure modes:

- **overflow**: two claims of ``1e308`` sum to ``inf`` and every normalized weight to NaN. The
  weights are divided by their maximum before anything is summed, so the sum is at most ``n``.
- **takeover**: one claim of ``1e12`` among honest counts of ``1e2`` gives that client all the
  weight of a weighted mean or weighted geometric median. With ``cap``, no weight may exceed
  ``cap`` times the round's median weight. A weighted rule then tolerates ``f`` inflating
  clients only while ``f * cap < n - f`` (their total weight stays below the honest clients');
  ``cap = 1`` makes the weights almost uniform, which restores the unweighted breakdown point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ScreenedWeights:
    """float64 weights summing to 1 (empty input: empty) and the positions that were capped."""

    weights: np.ndarray
    capped: tuple[int, ...]


def check_weight_cap(cap: float | None, *, owner: str) -> None:
    """``cap`` must be None or a finite number >= 1 (below 1 even the median would be cut)."""
    if cap is None:
        return
    if isinstance(cap, bool) or not isinstance(cap, int | float) or not np.isfinite(cap):
        raise ValueError(f"{owner}: weight_cap must be None or a finite number >= 1, not {cap!r}")
    if cap < 1:
        raise ValueError(f"{owner}: weight_cap must be >= 1 (a multiple of the median), not {cap}")


def screen_weights(raw: Sequence[float], *, cap: float | None) -> ScreenedWeights:
    """Normalize ``raw`` (each finite and > 0) to sum 1, capping each at ``cap`` x median.

    >>> screen_weights([1.0, 1.0, 1e308, 1e308], cap=None).weights.round(3).tolist()
    [0.0, 0.0, 0.5, 0.5]
    >>> screen_weights([1.0, 2.0, 1e12], cap=10.0).weights.round(3).tolist()  # 1 : 2 : 20
    [0.043, 0.087, 0.87]
    """
    values = np.asarray(raw, dtype=np.float64)
    if values.size == 0:
        return ScreenedWeights(np.zeros(0), ())
    if not np.isfinite(values).all() or (values <= 0).any():
        raise ValueError("weights must be finite and > 0 (the reply validator excludes others)")
    scaled = values / values.max()  # in (0, 1]: no sum below can overflow
    capped: tuple[int, ...] = ()
    if cap is not None:
        limit = cap * float(np.median(scaled))
        over = scaled > limit
        capped = tuple(int(i) for i in np.flatnonzero(over))
        scaled = np.minimum(scaled, limit)
    return ScreenedWeights(scaled / scaled.sum(), capped)
