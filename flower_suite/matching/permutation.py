"""Permutation of hidden units in state dicts (FedMA, dissertation chapter 5, spec section 2).

A model is described by an ordered list of :class:`LayerSpec` (one per matchable layer, in
forward order). Reordering the units of layer ``n`` moves

* FC / conv: rows (output channels) of ``weight`` and ``bias`` of layer ``n``;
* embedding: columns of the ``V x E`` table (units are the embedding dimensions);
* LSTM: rows ``h, H+h, 2H+h, 3H+h`` of ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``
  (the 4 gates jointly) and column ``h`` of ``weight_hh``;

and the input side of layer ``n+1``: columns of an FC / LSTM ``weight_ih``, input channels of a
conv, and for conv -> FC whole blocks ``[c*H*W, (c+1)*H*W)`` of FC input columns (PyTorch's
channel-major flatten). Works for numpy arrays and torch tensors alike.

Convention: ``perm[i]`` is the old unit that becomes new unit ``i`` (a gather). The scatter
counterpart used to align clients to a wider global layer is :func:`scatter_units`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import nn

__all__ = [
    "LayerSpec",
    "describe_model",
    "expand_index",
    "input_slots",
    "num_units",
    "output_slots",
    "permute_layer",
    "permute_model",
    "random_permutations",
    "reconstruct_local",
    "scatter_units",
]

LayerKind = Literal["linear", "conv", "embedding", "lstm"]
IntArray = NDArray[np.int64]
# (tensor name, axis, mode): mode "gate" = 4 gate blocks of size n (g-major), "block" = n
# contiguous blocks of size axis_len / n (unit-major; size 1 for plain rows/columns).
Slot = tuple[str, int, str]


@dataclass(frozen=True)
class LayerSpec:
    """Names of the tensors of one matchable layer.

    For ``kind="lstm"``, ``weight``/``bias`` are ``weight_ih``/``bias_ih`` and ``weight_hh``/
    ``bias_hh`` name the recurrent tensors (single-layer LSTM, PyTorch gate order i, f, g, o).
    """

    kind: LayerKind
    weight: str
    bias: str | None = None
    weight_hh: str | None = None
    bias_hh: str | None = None

    @classmethod
    def linear(cls, prefix: str, bias: bool = True) -> LayerSpec:
        """An ``nn.Linear`` at module path ``prefix``."""
        return cls("linear", f"{prefix}.weight", f"{prefix}.bias" if bias else None)

    @classmethod
    def conv(cls, prefix: str, bias: bool = True) -> LayerSpec:
        """An ``nn.Conv2d`` at module path ``prefix``."""
        return cls("conv", f"{prefix}.weight", f"{prefix}.bias" if bias else None)

    @classmethod
    def embedding(cls, prefix: str) -> LayerSpec:
        """An ``nn.Embedding`` at module path ``prefix``."""
        return cls("embedding", f"{prefix}.weight")

    @classmethod
    def lstm(cls, prefix: str, layer: int = 0, bias: bool = True) -> LayerSpec:
        """Layer ``layer`` of an ``nn.LSTM`` at module path ``prefix``."""
        return cls(
            "lstm",
            f"{prefix}.weight_ih_l{layer}",
            f"{prefix}.bias_ih_l{layer}" if bias else None,
            f"{prefix}.weight_hh_l{layer}",
            f"{prefix}.bias_hh_l{layer}" if bias else None,
        )


def describe_model(model: nn.Module) -> list[LayerSpec]:
    """Layer description of a sequential model built from Linear, Conv2d, Embedding, LSTM.

    Modules are taken in registration order, which must be the forward order (true for
    :class:`~flower_suite.models.MLP`, ``DigitsCNN``, ``LeNet`` and ``CharLSTM``).
    """
    layers: list[LayerSpec] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            layers.append(LayerSpec.linear(name, module.bias is not None))
        elif isinstance(module, nn.Conv2d):
            layers.append(LayerSpec.conv(name, module.bias is not None))
        elif isinstance(module, nn.Embedding):
            layers.append(LayerSpec.embedding(name))
        elif isinstance(module, nn.LSTM):
            if module.num_layers != 1 or module.bidirectional or module.proj_size:
                raise ValueError("only single-layer, unidirectional LSTMs are supported")
            layers.append(LayerSpec.lstm(name, 0, module.bias))
        elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            raise ValueError("BatchNorm is out of scope for FedMA (spec section 2)")
    return layers


def num_units(state: Mapping[str, Any], spec: LayerSpec) -> int:
    """Number of hidden units (rows, channels, embedding dims, LSTM hidden size) of a layer."""
    if spec.kind == "embedding":
        return int(state[spec.weight].shape[1])
    if spec.kind == "lstm":
        assert spec.weight_hh is not None
        return int(state[spec.weight_hh].shape[1])
    return int(state[spec.weight].shape[0])


def output_slots(spec: LayerSpec) -> list[Slot]:
    """Tensors and axes that carry the units of ``spec`` on its output side."""
    if spec.kind == "embedding":
        return [(spec.weight, 1, "block")]
    if spec.kind == "lstm":
        assert spec.weight_hh is not None
        names = [spec.weight, spec.weight_hh, spec.bias, spec.bias_hh]
        slots = [(n, 0, "gate") for n in names if n is not None]
        return [*slots, (spec.weight_hh, 1, "block")]
    slots = [(spec.weight, 0, "block")]
    return slots + ([(spec.bias, 0, "block")] if spec.bias is not None else [])


def input_slots(spec: LayerSpec) -> list[Slot]:
    """Tensors and axes of ``spec`` that consume the previous layer's units."""
    if spec.kind == "embedding":
        raise ValueError("an embedding layer cannot follow another matched layer")
    return [(spec.weight, 1, "block")]


def expand_index(units: ArrayLike, n_units: int, axis_len: int, mode: str) -> IntArray:
    """Indices along an axis of length ``axis_len`` owned by ``units`` (of ``n_units``).

    ``mode="gate"``: 4 LSTM gate blocks, unit ``h`` owns ``h, n+h, 2n+h, 3n+h``.
    ``mode="block"``: unit ``h`` owns ``[h*b, (h+1)*b)`` with ``b = axis_len / n_units``
    (``b = 1`` for plain rows/columns, ``b = H*W`` for conv -> FC).
    """
    idx = np.asarray(units, dtype=np.int64)
    if mode == "gate":
        if axis_len % n_units or axis_len // n_units != 4:
            raise ValueError(f"LSTM axis of length {axis_len} is not 4 x {n_units} gates")
        return (np.arange(4)[:, None] * n_units + idx[None, :]).ravel()
    if axis_len % n_units:
        raise ValueError(f"axis of length {axis_len} does not split into {n_units} unit blocks")
    block = axis_len // n_units
    return (idx[:, None] * block + np.arange(block)[None, :]).ravel()


def _take(tensor: Any, axis: int, index: IntArray) -> Any:
    if isinstance(tensor, torch.Tensor):
        return tensor.index_select(axis, torch.as_tensor(index, device=tensor.device))
    return np.take(np.asarray(tensor), index, axis=axis)


def scatter_units(
    tensor: ArrayLike, axis: int, assign: ArrayLike, width: int, mode: str = "block"
) -> NDArray[np.float64]:
    """Place the units of ``tensor`` along ``axis`` at global positions ``assign`` (float64).

    The result has ``width`` units on that axis; global units the client lacks are zero. This
    is the alignment ``Pi_j W_j`` of spec section 5 (step 4).
    """
    arr = np.asarray(tensor, dtype=np.float64)
    target = np.asarray(assign, dtype=np.int64)
    n_units = target.shape[0]
    axis_len = arr.shape[axis]
    per_unit = 4 if mode == "gate" else axis_len // max(n_units, 1)
    shape = list(arr.shape)
    shape[axis] = width * per_unit if mode == "block" else 4 * width
    out = np.zeros(shape)
    dst = expand_index(target, width, shape[axis], mode)
    src = expand_index(np.arange(n_units), n_units, axis_len, mode)
    index: list[Any] = [slice(None)] * arr.ndim
    index[axis] = dst
    src_index: list[Any] = [slice(None)] * arr.ndim
    src_index[axis] = src
    out[tuple(index)] = arr[tuple(src_index)]
    return out


def permute_layer(
    state: Mapping[str, Any], layers: Sequence[LayerSpec], index: int, perm: ArrayLike
) -> dict[str, Any]:
    """Return a copy of ``state`` with the units of ``layers[index]`` reordered by ``perm``.

    New unit ``i`` is old unit ``perm[i]``; the next layer's input side moves with it (blocks
    of ``H*W`` columns for conv -> FC). The last layer's outputs (classes) cannot be permuted.
    """
    if index >= len(layers) - 1:
        raise ValueError("the last layer's outputs are the classes and stay fixed")
    spec = layers[index]
    n_units = num_units(state, spec)
    order = np.asarray(perm, dtype=np.int64)
    if sorted(order.tolist()) != list(range(n_units)):
        raise ValueError(f"perm is not a permutation of {n_units} units")
    out = dict(state)
    for name, axis, mode in [*output_slots(spec), *input_slots(layers[index + 1])]:
        tensor = out[name]
        out[name] = _take(tensor, axis, expand_index(order, n_units, tensor.shape[axis], mode))
    return out


def permute_model(
    state: Mapping[str, Any], layers: Sequence[LayerSpec], perms: Sequence[ArrayLike]
) -> dict[str, Any]:
    """Apply one permutation per hidden layer (``len(perms) == len(layers) - 1``)."""
    if len(perms) != len(layers) - 1:
        raise ValueError(f"expected {len(layers) - 1} permutations, got {len(perms)}")
    out = dict(state)
    for index, perm in enumerate(perms):
        out = permute_layer(out, layers, index, perm)
    return out


def random_permutations(
    state: Mapping[str, Any], layers: Sequence[LayerSpec], rng: np.random.Generator
) -> list[IntArray]:
    """One random permutation per hidden layer of ``state``."""
    return [rng.permutation(num_units(state, spec)) for spec in layers[:-1]]


def reconstruct_local(
    global_state: Mapping[str, Any],
    layers: Sequence[LayerSpec],
    assignments: Sequence[ArrayLike],
) -> dict[str, Any]:
    """Client-size model from the global model and the client's assignments (spec section 6).

    ``assignments[n]`` is the client's assignment for hidden layer ``n``. Every hidden layer
    keeps the global units ``assign(0..L_j-1)`` on its output side, every layer keeps the
    previous layer's ``assign`` on its input side (channel blocks for conv -> FC, joint gate
    rows and ``weight_hh`` columns for LSTM); the last layer keeps all classes. Tensors not
    named in ``layers`` are copied unchanged.
    """
    if len(assignments) != len(layers) - 1:
        raise ValueError(f"expected {len(layers) - 1} assignments, got {len(assignments)}")
    out = dict(global_state)
    for index, assign in enumerate(assignments):
        spec = layers[index]
        width = num_units(global_state, spec)
        target = np.asarray(assign, dtype=np.int64)
        if target.size and (target.min() < 0 or target.max() >= width):
            raise ValueError(f"layer {index}: assignment outside the global width {width}")
        for name, axis, mode in [*output_slots(spec), *input_slots(layers[index + 1])]:
            tensor = out[name]
            out[name] = _take(tensor, axis, expand_index(target, width, tensor.shape[axis], mode))
    return out
