"""Clipping, quantization, the weighted-aggregation trick and dequantization.

Spec ``secagg.md`` section 5 (Salvia, seed 002 lines 169-185):

1. clip ``x' = clip(x, -c, c)`` (clipped entries are counted: Flower clips silently);
2. quantize ``q = floor((x' + c)(T-1)/(2c) + ρ)``, ``ρ ~ U[0,1)`` (unbiased stochastic rounding)
   or ``ρ = 1/2`` (round to nearest), so ``q ∈ {0..T-1}`` and the step is ``Δ = 2c/(T-1)``;
3. weight ``w = e`` and build ``x_u = [w, w q_1, ..., w q_l]`` (length ``l + 1``). The rule
   for weights (one rule, client and server): ``e`` must be an integer (an integral float is
   accepted) with ``0 <= e <= W``; a client refuses anything else (a larger, fractional,
   negative, non-finite or boolean count) with :class:`SecAggError` and drops out of the
   round, instead of capping or truncating it silently. ``e = 0`` contributes nothing;
5. after unmasking, ``Z = Σ x_u`` exactly (``M >= n W T``) and the weighted mean of the clipped
   inputs is ``(Z_{1..l} / Z_0) Δ - c``. Honest inputs confine the sum (:func:`sum_violation`):
   ``0 <= Z_0 <= |U3| W`` and ``0 <= Z_i <= Z_0 (T - 1)``; the server refuses a sum outside
   that range (a corrupted masked vector), and a zero total weight (nothing to average).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flower_suite.secagg.errors import SecAggError
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


def client_weight(num_examples: object, max_weight: int) -> int:
    """The integer weight ``w = e`` of a client, refused unless ``e`` is an integer (or an
    integral float) in ``[0, max_weight]``.

    Refusing rather than capping keeps the weighted mean what the strategy asked for: a capped
    or truncated weight would silently skew it. Raises :class:`SecAggError` naming the rule.
    """
    if isinstance(num_examples, bool) or not isinstance(num_examples, int | float | np.number):
        raise SecAggError(f"weight (num-examples) must be a number, got {num_examples!r}")
    value = float(num_examples)
    if not math.isfinite(value):
        raise SecAggError(f"weight (num-examples) must be finite, got {num_examples!r}")
    if not value.is_integer():
        raise SecAggError(
            f"weight (num-examples) must be an integer, got {num_examples!r}; secure "
            "aggregation refuses fractional weights instead of truncating them"
        )
    if value < 0:
        raise SecAggError(f"weight (num-examples) must be >= 0, got {num_examples!r}")
    if value > max_weight:
        raise SecAggError(
            f"weight (num-examples) {int(value)} exceeds max_weight = {max_weight}; secure "
            "aggregation refuses it instead of capping it: raise max_weight (and the modulus) "
            "or weigh clients differently (weight_fn)"
        )
    return int(value)


def quantize(
    x: np.ndarray, c: float, levels: int, rng: np.random.Generator | None
) -> tuple[np.ndarray, int]:
    """Clip to ``[-c, c]`` and quantize to ``0..levels-1`` (``T`` levels; stochastic with
    ``rng``, nearest without).

    Returns ``(q as uint64, number of clipped entries)``.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.isfinite(x).all():
        raise SecAggError("update contains NaN or Inf; refusing to quantize")
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


def sum_violation(total: np.ndarray, params: SecAggParams, survivors: int) -> str:
    """Why the unmasked sum ``Z`` of ``survivors`` honest inputs is impossible ("" if it is not).

    Each survivor contributes ``w`` in ``[0, W]`` to ``Z_0`` and ``w q`` with ``q`` in
    ``[0, T-1]`` to every other entry, so ``Z_0 <= survivors W`` and ``Z_i <= Z_0 (T-1)``
    (the bounds are exact: the declared total weight ``Z_0`` bounds every entry). Both are
    below ``M`` (``M >= n W T``), so a sum outside them is no wraparound of honest inputs but
    a corrupted masked vector or share. In-range garbage cannot be told from honest inputs.
    """
    total = np.asarray(total)
    if total.size < 1:
        return "the unmasked sum is empty"
    weight = int(total[0])
    if weight > survivors * params.W:
        return (
            f"total weight {weight} is out of range: {survivors} survivors weigh at most "
            f"{survivors} x max_weight = {survivors * params.W}"
        )
    if weight == 0:
        return "the survivors' total weight is zero: no mean to compute"
    bound = weight * (params.T - 1)
    if total.size > 1:
        largest = int(total[1:].max())
        if largest > bound:
            where = int(np.argmax(total[1:]))
            return (
                f"entry {where} of the unmasked sum is {largest}, out of range: inputs of total "
                f"weight {weight} quantized to T = {params.T} levels sum to at most {bound}"
            )
    return ""


def dequantize_mean(total: np.ndarray, params: SecAggParams) -> np.ndarray:
    """Weighted mean of the clipped inputs from the unmasked sum ``Z`` (float64, length l)."""
    total = np.asarray(total)
    weight = int(total[0])
    if weight <= 0:
        raise ValueError("the survivors' total weight is zero; no mean to dequantize")
    return total[1:].astype(np.float64) * (params.step / weight) - params.c
