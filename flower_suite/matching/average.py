"""Matched averaging of hidden units (FedMA, dissertation chapter 5, spec sections 3-5).

* :func:`aggregate_units` averages client units given the BBP-MAP assignments, dividing each
  global unit by the number of clients matched to it (dummy units excluded, spec section 3).
* :func:`average_recurrent` averages an LSTM ``weight_hh`` entrywise over the clients that hold
  both units (``H = (1/J) sum_j Pi_j H_j Pi_j^T`` with dummies excluded, spec section 2).
* :func:`matched_average` runs a one-shot, layer-by-layer match of whole state dicts (PFNM
  style, no retraining between layers): each hidden layer is matched on its unit vectors
  (weights plus bias, input side aligned to the previous global layer), then the next layer's
  input side is scattered to the global positions. The last layer (the classes) is the plain
  mean ``W_N = (1/J) sum_j Pi_j W_{j,N}`` of the aligned, zero-padded client layers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from flower_suite.matching.bbp_map import match_layer
from flower_suite.matching.permutation import LayerSpec, input_slots, scatter_units

__all__ = [
    "MatchedAverage",
    "aggregate_units",
    "average_recurrent",
    "class_weighted_last_layer",
    "class_weights",
    "from_unit_vectors",
    "matched_average",
    "unit_vectors",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class MatchedAverage:
    """Outcome of :func:`matched_average`.

    Attributes
    ----------
    state:
        Global state dict (float64 numpy arrays) for the tensors named in the description.
    assignments:
        ``assignments[n][j]``: client ``j``'s assignment for hidden layer ``n``.
    widths:
        Global width of each hidden layer.
    """

    state: dict[str, FloatArray]
    assignments: list[list[IntArray]]
    widths: list[int]


def _numpy(value: Any) -> FloatArray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.array(value, dtype=np.float64)


def unit_vectors(state: Mapping[str, Any], spec: LayerSpec) -> FloatArray:
    """Matching vectors ``[w; b]`` of the units of one layer, shape ``(L, D)``.

    Conv: the flattened ``C_in*k*k`` filter plus bias. Embedding: column ``e`` of the table.
    LSTM: ``concat_g W_ih[gH+h, :]`` (4 gates) plus the 4 ``bias_ih`` and 4 ``bias_hh`` entries.
    """
    weight = _numpy(state[spec.weight])
    if spec.kind == "embedding":
        return weight.T.copy()
    if spec.kind == "lstm":
        hidden = weight.shape[0] // 4
        parts = [weight.reshape(4, hidden, -1).transpose(1, 0, 2).reshape(hidden, -1)]
        parts += [
            _numpy(state[name]).reshape(4, hidden).T
            for name in (spec.bias, spec.bias_hh)
            if name is not None
        ]
        return np.hstack(parts)
    parts = [weight.reshape(weight.shape[0], -1)]
    if spec.bias is not None:
        parts.append(_numpy(state[spec.bias])[:, None])
    return np.hstack(parts)


def from_unit_vectors(
    vectors: ArrayLike, spec: LayerSpec, weight_shape: Sequence[int]
) -> dict[str, FloatArray]:
    """Inverse of :func:`unit_vectors` (``weight_hh`` excluded for LSTMs).

    ``weight_shape`` is the shape of one (input-aligned) client weight, used for the input
    side of the layer (the number of units is taken from ``vectors``).
    """
    vecs = np.asarray(vectors, dtype=np.float64)
    width = vecs.shape[0]
    if spec.kind == "embedding":
        return {spec.weight: vecs.T.copy()}
    if spec.kind == "lstm":
        d_in = int(weight_shape[1])
        out: dict[str, FloatArray] = {
            spec.weight: vecs[:, : 4 * d_in].reshape(width, 4, d_in).transpose(1, 0, 2)
        }
        out[spec.weight] = out[spec.weight].reshape(4 * width, d_in).copy()
        col = 4 * d_in
        for name in (spec.bias, spec.bias_hh):
            if name is not None:
                out[name] = vecs[:, col : col + 4].T.reshape(-1).copy()
                col += 4
        return out
    tail = tuple(int(d) for d in weight_shape[1:])
    n_in = int(np.prod(tail))
    out = {spec.weight: vecs[:, :n_in].reshape((width, *tail)).copy()}
    if spec.bias is not None:
        out[spec.bias] = vecs[:, n_in].copy()
    return out


def aggregate_units(
    weights: Sequence[ArrayLike], assignments: Sequence[ArrayLike], width: int
) -> FloatArray:
    """Plain matched mean: ``theta_i = mean{w_jl : assign_j(l) = i}``, shape ``(width, D)``."""
    first = np.asarray(weights[0], dtype=np.float64)
    sums = np.zeros((width, first.shape[1]))
    counts = np.zeros(width, dtype=np.int64)
    for w, assign in zip(weights, assignments, strict=True):
        target = np.asarray(assign, dtype=np.int64)
        if len(np.unique(target)) != len(target):
            raise ValueError("an assignment must be injective")
        sums[target] += np.asarray(w, dtype=np.float64)
        counts[target] += 1
    if np.any(counts == 0):
        raise ValueError("every global unit needs at least one matched client unit")
    return sums / counts[:, None]


def average_recurrent(
    weights_hh: Sequence[ArrayLike], assignments: Sequence[ArrayLike], width: int
) -> FloatArray:
    """Average LSTM ``weight_hh`` (``4H_j x H_j``) into ``4*width x width``.

    Entry ``(g*width + i, i')`` is the mean over the clients holding both global units ``i``
    and ``i'``; entries no client holds are zero.
    """
    total = np.zeros((4 * width, width))
    pairs = np.zeros((width, width))
    for w, assign in zip(weights_hh, assignments, strict=True):
        rows = scatter_units(w, 0, assign, width, mode="gate")
        total += scatter_units(rows, 1, assign, width, mode="block")
        held = np.zeros(width)
        held[np.asarray(assign, dtype=np.int64)] = 1.0
        pairs += np.outer(held, held)
    counts = np.tile(pairs, (4, 1))
    return np.divide(total, counts, out=np.zeros_like(total), where=counts > 0)


def class_weights(class_counts: ArrayLike) -> FloatArray:
    """Per-class client weights ``p_jk = n_jk / sum_j' n_j'k`` of a ``(J, K)`` count matrix.

    Spec section 5, step 3 (the reference-code reading of the garbled formula); a class that
    no client holds gets uniform weights ``1/J``. Each column sums to 1.
    """
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.ndim != 2 or np.any(counts < 0) or not np.all(np.isfinite(counts)):
        raise ValueError("class_counts must be a finite, non-negative (J, K) matrix")
    totals = counts.sum(axis=0)
    uniform = np.full_like(counts, 1.0 / counts.shape[0])
    safe = np.where(totals > 0, totals, 1.0)
    return np.where(totals > 0, counts / safe, uniform)


def class_weighted_last_layer(tensors: Sequence[ArrayLike], class_counts: ArrayLike) -> FloatArray:
    """Class-proportion weighted average of last-layer tensors (classes on axis 0).

    ``W_N[k] = sum_j p_jk W_{j,N}[k]`` for a PyTorch ``Linear`` weight ``(K, in)`` or bias
    ``(K,)`` (the dissertation's column ``k``); inputs must already be aligned to the global
    previous layer. Note that clients disclose their class counts (a privacy cost).
    """
    arrays = np.stack([np.asarray(t, dtype=np.float64) for t in tensors])
    weights = class_weights(class_counts)
    if weights.shape != arrays.shape[:2]:
        raise ValueError(
            f"class_counts has shape {weights.shape}, expected (J, K) = {arrays.shape[:2]}"
        )
    return np.einsum("jk,jk...->k...", weights, arrays)


def matched_average(
    models: Sequence[Mapping[str, Any]],
    layers: Sequence[LayerSpec],
    *,
    gamma0: float = 7.0,
    sigma0_sq: float = 1.0,
    sigma_sq: float = 1.0,
    iterations: int = 5,
    seed: int = 0,
    max_width: int | Sequence[int | None] | None = None,
    popularity_weight: float = 1.0,
    aggregation: str = "mean",
    class_counts: ArrayLike | None = None,
) -> MatchedAverage:
    """One-shot layer-by-layer matched averaging of ``J`` client state dicts.

    Parameters
    ----------
    models:
        Client state dicts (numpy arrays or torch tensors); widths may differ per client.
    layers:
        Matchable layers in forward order (see :func:`~flower_suite.matching.describe_model`);
        all but the last are matched, the last keeps its outputs (classes).
    gamma0, sigma0_sq, sigma_sq, iterations, popularity_weight, aggregation:
        Passed to :func:`~flower_suite.matching.match_layer` for every hidden layer.
    seed:
        Layer ``n`` is matched with seed ``seed + n``.
    max_width:
        One value for all hidden layers or one per hidden layer (``None``: the default of
        :func:`~flower_suite.matching.match_layer`).
    class_counts:
        Optional ``(J, K)`` class counts; the last layer is then the class-weighted average of
        :func:`class_weighted_last_layer` instead of the plain ``1/J`` mean.
    """
    if not models:
        raise ValueError("matched_average needs at least one model")
    if len(layers) < 2:
        raise ValueError("need at least one hidden layer and an output layer")
    n_hidden = len(layers) - 1
    if max_width is None or isinstance(max_width, int):
        widths_cap: list[int | None] = [max_width] * n_hidden
    else:
        widths_cap = list(max_width)
        if len(widths_cap) != n_hidden:
            raise ValueError(f"max_width needs {n_hidden} entries, got {len(widths_cap)}")
    states = [{k: _numpy(v) for k, v in m.items()} for m in models]
    result: dict[str, FloatArray] = {}
    all_assign: list[list[IntArray]] = []
    widths: list[int] = []
    for n, spec in enumerate(layers[:-1]):
        vecs = [unit_vectors(st, spec) for st in states]
        match = match_layer(
            vecs, gamma0=gamma0, sigma0_sq=sigma0_sq, sigma_sq=sigma_sq, iterations=iterations,
            seed=seed + n, max_width=widths_cap[n], popularity_weight=popularity_weight,
            aggregation=aggregation,
        )  # fmt: skip
        width = match.width
        result.update(from_unit_vectors(match.global_weights, spec, states[0][spec.weight].shape))
        if spec.kind == "lstm":
            assert spec.weight_hh is not None
            hh = [st[spec.weight_hh] for st in states]
            result[spec.weight_hh] = average_recurrent(hh, match.assignments, width)
        for st, assign in zip(states, match.assignments, strict=True):
            for name, axis, mode in input_slots(layers[n + 1]):
                st[name] = scatter_units(st[name], axis, assign, width, mode)
        all_assign.append(match.assignments)
        widths.append(width)
    last = layers[-1]
    for out_name in (last.weight, last.bias, last.weight_hh, last.bias_hh):
        if out_name is None:
            continue
        shapes = {st[out_name].shape for st in states}
        if len(shapes) != 1:
            raise ValueError(f"output layer {out_name!r} has different shapes across clients")
        tensors = [st[out_name] for st in states]
        if class_counts is None or out_name in (last.weight_hh, last.bias_hh):
            result[out_name] = np.mean(tensors, axis=0)
        else:
            result[out_name] = class_weighted_last_layer(tensors, class_counts)
    return MatchedAverage(state=result, assignments=all_assign, widths=widths)
