"""Models of variable width for FedMA: rebuild any supported network for given tensor shapes.

FedMA's global model grows (spec ``shared/spec/fedma.md`` sections 3 and 8) and every client
model changes width during a layer-wise pass (section 5, step 4), so server and clients must
build networks whose matchable layers have widths known only at run time. Instead of giving
every model class width arguments, :func:`resize_model` copies a *template* model and swaps
each ``nn.Linear``, ``nn.Conv2d``, ``nn.Embedding`` and single-layer ``nn.LSTM`` for one of
the requested shape, keeping every other setting (kernel size, stride, padding, bias,
``batch_first``, dtype, device). This works for every model whose ``forward`` takes its sizes
from its modules (MLP, DigitsCNN, LeNet, VGG-9, CharLSTM here); one that hard-codes a width
(``x.view(-1, 512)``) cannot grow and fails with a shape error when run.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from flower_suite.matching.permutation import LayerSpec, describe_model

__all__ = [
    "count_state_parameters",
    "matchable_layers",
    "model_for_state",
    "resize_model",
    "state_shapes",
]

Shapes = Mapping[str, Sequence[int]]


def state_shapes(state: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Shapes of a state dict, an ``ArrayRecord`` or any mapping of array-likes."""
    return {name: tuple(int(d) for d in value.shape) for name, value in state.items()}


def count_state_parameters(shapes: Shapes) -> int:
    """Number of scalars in tensors of the given shapes (FedMA's model growth, section 8)."""
    total = 0
    for shape in shapes.values():
        size = 1
        for dim in shape:
            size *= int(dim)
        total += size
    return total


def matchable_layers(model: nn.Module) -> list[LayerSpec]:
    """The model's matchable layers; a clear ``ValueError`` when FedMA cannot handle it.

    Every parameter and buffer must belong to a Linear, Conv2d, Embedding or single-layer
    LSTM (spec section 2: BatchNorm and residual connections are out of scope), and there must
    be a hidden layer to match plus an output layer.
    """
    layers = describe_model(model)  # raises on BatchNorm and multi-layer LSTMs
    if len(layers) < 2:
        raise ValueError(
            f"FedMA needs at least two matchable layers (a hidden layer and the output "
            f"layer); {type(model).__name__} has {len(layers)}"
        )
    named = {
        name
        for spec in layers
        for name in (spec.weight, spec.bias, spec.weight_hh, spec.bias_hh)
        if name is not None
    }
    other = sorted(set(model.state_dict()) - named)
    if other:
        raise ValueError(
            f"{type(model).__name__} has tensors outside Linear/Conv2d/Embedding/LSTM layers "
            f"({other[:4]}); FedMA cannot permute them (spec section 2)"
        )
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            raise ValueError("grouped convolutions cannot be matched by FedMA")
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            raise ValueError("embeddings with padding_idx are not supported by FedMA")
    return layers


def _shape(shapes: Shapes, name: str) -> tuple[int, ...]:
    if name not in shapes:
        raise ValueError(f"no shape given for tensor {name!r}")
    return tuple(int(d) for d in shapes[name])


def _resized(module: nn.Module, prefix: str, shapes: Shapes) -> nn.Module | None:
    """A copy of ``module`` with the shapes named under ``prefix``, or None if unchanged."""
    dot = f"{prefix}." if prefix else ""
    if isinstance(module, nn.Linear):
        out_f, in_f = _shape(shapes, f"{dot}weight")
        if (out_f, in_f) == (module.out_features, module.in_features):
            return None
        new: nn.Module = nn.Linear(in_f, out_f, bias=module.bias is not None)
    elif isinstance(module, nn.Conv2d):
        out_c, in_c, *_ = _shape(shapes, f"{dot}weight")
        if (out_c, in_c) == (module.out_channels, module.in_channels):
            return None
        new = nn.Conv2d(
            in_c,
            out_c,
            module.kernel_size,  # type: ignore[arg-type]
            stride=module.stride,  # type: ignore[arg-type]
            padding=module.padding,  # type: ignore[arg-type]
            dilation=module.dilation,  # type: ignore[arg-type]
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
        )
    elif isinstance(module, nn.Embedding):
        rows, dim = _shape(shapes, f"{dot}weight")
        if (rows, dim) == (module.num_embeddings, module.embedding_dim):
            return None
        new = nn.Embedding(rows, dim)
    elif isinstance(module, nn.LSTM):
        hidden = _shape(shapes, f"{dot}weight_hh_l0")[1]
        inputs = _shape(shapes, f"{dot}weight_ih_l0")[1]
        if (hidden, inputs) == (module.hidden_size, module.input_size):
            return None
        new = nn.LSTM(
            inputs, hidden, num_layers=1, bias=module.bias, batch_first=module.batch_first
        )
    else:
        return None
    reference = next(module.parameters())
    return new.to(dtype=reference.dtype, device=reference.device)


def resize_model(template: nn.Module, shapes: Shapes) -> nn.Module:
    """A deep copy of ``template`` whose matchable layers have the given tensor shapes.

    Parameters
    ----------
    template:
        A supported model (see :func:`matchable_layers`); it is not modified.
    shapes:
        Tensor name -> shape for (at least) every matchable layer, e.g.
        :func:`state_shapes` of a FedMA global model or of a client's aligned model.

    Returns
    -------
    nn.Module
        The resized copy. Resized layers are freshly initialised; load a state dict into it.
    """
    matchable_layers(template)
    model = copy.deepcopy(template)
    replacements = []
    for name, module in model.named_modules():
        new = _resized(module, name, shapes)
        if new is not None:
            replacements.append((name, new))
    for name, new in replacements:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, new)
    return model


def model_for_state(
    template: nn.Module | Callable[[], nn.Module], state: Mapping[str, Any]
) -> nn.Module:
    """A model of the template's architecture that holds ``state`` (any tensor shapes).

    ``template`` is a model or a zero-argument factory; ``state`` a state dict of torch
    tensors or numpy arrays, or an ``ArrayRecord`` (converted with ``to_torch_state_dict``).
    """
    import torch

    model = template if isinstance(template, nn.Module) else template()
    if hasattr(state, "to_torch_state_dict"):
        tensors = state.to_torch_state_dict()
    else:
        tensors = {k: torch.as_tensor(v) for k, v in state.items()}
    resized = resize_model(model, state_shapes(tensors))
    own = resized.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"state does not fit {type(model).__name__}: missing {missing[:4]}, "
            f"unexpected {unexpected[:4]}"
        )
    resized.load_state_dict({k: t.to(own[k].dtype) for k, t in tensors.items()})
    return resized
