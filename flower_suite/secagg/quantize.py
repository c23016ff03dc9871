"""Clipping, quantization, the weighted-aggregation trick and dequantization.

Spec ``secagg.md`` section 5 (Salvia, seed 002 lines 169-185):

1. clip ``x' = clip(x, -c, c)`` (clipped entries are counted: Flower clips silently);
2. quantize ``q = floor((x' + c)(T-1)/(2c) + ρ)``, ``ρ ~ U[0,1)`` (unbiased stochastic rounding)
   or ``ρ = 1/2`` (round to nearest), so ``q ∈ {0..T-1}`` and the step is ``Δ = 2c/(T-1)``;
3. weight ``w = min(e, W)`` and build ``x_u = [w, w q_1, ..., w q_l]`` (length ``l + 1``);
5. after unmasking, ``Z = Σ x_u`` exactly (``M >= n W T``) and the weighted mean of the clipped
   inputs is ``(Z_{1..l} / Z_0) Δ - c``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flower_suite.secagg.params import SecAggParams


@dataclass(frozen=True)
class EncodedInput:
    """A client's integer input ``x_u`` and what quantization did to it."""

    vector: np.ndarray  # (l + 1,), params.dtype
    weight: int
    clipped: int  # entries with |x| > c

    @property
    def clipped_fraction(self) -> float:
        length = self.vector.size - 1
        return self.clipped / length if length else 0.0


def client_weight(num_examples: float, max_weight: int) -> int:
    """``w = min(e, W)`` as an integer; the example count must be finite and >= 0."""
    if isinstance(num_examples, bool) or not math.isfinite(float(num_examples)):
        raise ValueError(f"num_examples must be a finite number, got {num_examples!r}")
    if num_examples < 0:
        raise ValueError(f"num_examples must be >= 0, got {num_examples}")
    return min(int(num_examples), int(max_weight))


def quantize(
    x: np.ndarray, c: float, levels: int, rng: np.random.Generator | None
) -> tuple[np.ndarray, int]:
    """Clip to ``[-c, c]`` and quantize to ``0..levels-1`` (``T`` levels; stochastic with
    ``rng``, nearest without).

    Returns ``(q as uint64, number of clipped entries)``.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.isfinite(x).all():
        raise ValueError("update contains NaN or Inf; refusing to quantize")
    clipped = int(np.count_nonzero(np.abs(x) > c))
    scaled = (np.clip(x, -c, c) + c) * ((levels - 1) / (2.0 * c))
    noise = rng.random(x.size) if rng is not None else 0.5
    q = np.floor(scaled + noise)
    # float rounding can push (c + c) * (T-1) / 2c a hair above T-1: clamp into the range
    np.clip(q, 0, levels - 1, out=q)
    return q.astype(np.uint64), clipped


def encode_input(
    x: np.ndarray, num_examples: float, params: SecAggParams, rng: np.random.Generator | None
) -> EncodedInput:
    """``x_u = [w, w q]`` in ``params.dtype`` (spec section 5, steps 1-3)."""
    weight = client_weight(num_examples, params.W)
    q, clipped = quantize(x, params.c, params.T, rng if params.stochastic_rounding else None)
    out = np.empty(q.size + 1, dtype=params.dtype)
    out[0] = weight
    # w q <= W (T - 1) < M: exact in uint64 and in the target type
    np.multiply(q, np.uint64(weight), out=q)
    out[1:] = q
    return EncodedInput(vector=out, weight=weight, clipped=clipped)


def dequantize_mean(total: np.ndarray, params: SecAggParams) -> np.ndarray:
    """Weighted mean of the clipped inputs from the unmasked sum ``Z`` (float64, length l)."""
    total = np.asarray(total)
    weight = int(total[0])
    if weight <= 0:
        raise ValueError("the survivors' total weight is zero; no mean to dequantize")
    return total[1:].astype(np.float64) * (params.step / weight) - params.c
