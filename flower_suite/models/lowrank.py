"""PUFFERFISH low-rank layers and the one-shot SVD conversion (Wang, ch. 4; spec pufferfish.md).

A weight ``W`` of unrolled shape ``a x b`` becomes a trainable pair ``U Vᵀ`` of rank
``r = max(1, floor(rho * min(a, b)))`` (spec section 2). The conversion takes the truncated SVD
``W ≈ P_r S_r Q_rᵀ`` once and sets ``U = P_r S_r^{1/2}``, ``Vᵀ = S_r^{1/2} Q_rᵀ``, so at full rank
the factorized layer computes exactly what the original did.

* ``LowRankLinear``: ``Linear(m, r, bias=False)`` then ``Linear(r, n, bias)`` (section 3.1).
* ``LowRankConv2d``: a k x k conv ``c_in -> r`` with the original stride/padding/dilation, then a
  1 x 1 conv ``r -> c_out`` carrying the bias (section 3.2, pitfall P1).
* ``LowRankLSTM``: each gate's input and recurrent matrix factorized separately, eight pairs per
  layer, one bias per gate (section 3.3); ``GateLSTM`` is its dense twin with the same single
  bias per gate, so reference counts match the dissertation.

``factorize`` returns a converted deep copy; ``count_macs`` counts conv/FC multiply-adds.
The rank rule and the SVD split are in :mod:`~flower_suite.models.svd`, the two LSTMs in
:mod:`~flower_suite.models.lowrank_lstm` (both re-exported here).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn

from flower_suite.models.lowrank_lstm import GateLSTM, LowRankLSTM
from flower_suite.models.svd import check_rank_ratio, rank_for, svd_factors

__all__ = [
    "GateLSTM",
    "LowRankConv2d",
    "LowRankLSTM",
    "LowRankLinear",
    "count_macs",
    "factorize",
    "rank_for",
    "svd_factors",
    "weight_layer_names",
]


class LowRankLinear(nn.Module):
    """``y = v(u(x))``: ``u = Linear(in, rank, bias=False)``, ``v = Linear(rank, out, bias)``.

    Parameters: ``rank * (in + out)`` plus ``out`` for the bias.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        bias: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= rank <= min(in_features, out_features):
            raise ValueError(f"rank must lie in [1, {min(in_features, out_features)}]")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.u = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.v = nn.Linear(rank, out_features, bias=bias, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.v(self.u(x))

    def full_weight(self) -> torch.Tensor:
        """The equivalent dense weight ``(out, in)``."""
        return self.v.weight @ self.u.weight

    @classmethod
    def from_linear(cls, layer: nn.Linear, rank: int) -> LowRankLinear:
        """Truncated-SVD conversion of ``layer`` (bias copied onto ``v``)."""
        w = layer.weight
        new = cls(
            layer.in_features,
            layer.out_features,
            rank,
            bias=layer.bias is not None,
            device=w.device,
            dtype=w.dtype,
        )
        left, right = svd_factors(w, rank)
        with torch.no_grad():
            new.u.weight.copy_(right)
            new.v.weight.copy_(left)
            if layer.bias is not None:
                assert new.v.bias is not None
                new.v.bias.copy_(layer.bias)
        return new


class LowRankConv2d(nn.Module):
    """k x k conv ``c_in -> rank`` (original stride/padding/dilation), then 1 x 1 ``rank -> c_out``.

    Parameters: ``c_in * rank * k_h * k_w + rank * c_out`` plus ``c_out`` for the bias. Nothing
    sits between the two convs; the stride stays on the first one.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        rank: int,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        bias: bool = True,
        padding_mode: Literal["zeros", "reflect", "replicate", "circular"] = "zeros",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        k_h, k_w = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        k = (k_h, k_w)
        if not 1 <= rank <= min(out_channels, in_channels * k[0] * k[1]):
            raise ValueError(f"rank {rank} out of range for a {in_channels}->{out_channels} conv")
        self.in_channels, self.out_channels, self.rank = in_channels, out_channels, rank
        self.kernel_size = k
        self.u = nn.Conv2d(
            in_channels,
            rank,
            k,
            stride=stride,
            padding=padding,
            dilation=dilation,
            bias=False,
            padding_mode=padding_mode,
            device=device,
            dtype=dtype,
        )
        self.v = nn.Conv2d(rank, out_channels, 1, bias=bias, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.v(self.u(x))

    def full_weight(self) -> torch.Tensor:
        """The equivalent dense weight ``(c_out, c_in, k_h, k_w)``."""
        prod = self.v.weight.flatten(1) @ self.u.weight.flatten(1)
        return prod.reshape(self.out_channels, self.in_channels, *self.kernel_size)

    @classmethod
    def from_conv(cls, layer: nn.Conv2d, rank: int) -> LowRankConv2d:
        """Truncated SVD of the ``(c_out, c_in*k*k)`` unrolled weight (spec section 3.2)."""
        if layer.groups != 1:
            raise ValueError("grouped/depthwise convolutions are not factorized")
        w = layer.weight
        # torch types Conv2d's kernel_size/stride/padding/dilation attributes as
        # tuple[int, ...], its constructor as int | tuple[int, int]: always 2-tuples here.
        new = cls(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,  # type: ignore[arg-type]
            rank,
            stride=layer.stride,  # type: ignore[arg-type]
            padding=layer.padding,  # type: ignore[arg-type]
            dilation=layer.dilation,  # type: ignore[arg-type]
            bias=layer.bias is not None,
            padding_mode=layer.padding_mode,
            device=w.device,
            dtype=w.dtype,
        )
        left, right = svd_factors(w.flatten(1), rank)
        with torch.no_grad():
            new.u.weight.copy_(right.reshape(new.u.weight.shape))
            new.v.weight.copy_(left.reshape(new.v.weight.shape))
            if layer.bias is not None:
                assert new.v.bias is not None
                new.v.bias.copy_(layer.bias)
        return new


_LOW_RANK = (LowRankLinear, LowRankConv2d, LowRankLSTM)
_CANDIDATES = (nn.Linear, nn.Conv2d, nn.LSTM, GateLSTM)


def weight_layer_names(model: nn.Module) -> list[str]:
    """Names of the weight layers (Linear, Conv2d, LSTM, low-rank) in registration order.

    A low-rank layer counts once; its inner factor layers are not listed. Registration order
    is the forward order for sequential networks; use it to build spec section 4's "layers
    1..K-1" lists.
    """
    names: list[str] = []
    inside: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        if isinstance(module, _LOW_RANK):
            inside.append(name)
        if isinstance(module, _LOW_RANK + _CANDIDATES):
            names.append(name)
    return names


def _convert(
    module: nn.Module, rank_ratio: float, skip_no_savings: bool, svd_init: bool = True
) -> nn.Module | None:
    """The low-rank replacement of ``module``, or ``None`` when it stays full-rank.

    With ``svd_init=False`` only the structure is built (fresh factor weights): a client that
    is about to load the server's factors needs no SVD.
    """
    if isinstance(module, nn.Linear):
        a, b = module.out_features, module.in_features
        r = rank_for(a, b, rank_ratio)
        if skip_no_savings and r * (a + b) >= a * b:
            return None
        if not svd_init:
            w = module.weight
            return LowRankLinear(
                b, a, r, bias=module.bias is not None, device=w.device, dtype=w.dtype
            )
        return LowRankLinear.from_linear(module, r)
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            return None
        a, b = module.out_channels, module.weight[0].numel()
        r = rank_for(a, b, rank_ratio)
        if skip_no_savings and r * (a + b) >= a * b:
            return None
        if not svd_init:
            w = module.weight
            # (torch's Conv2d attribute vs constructor types: see from_conv)
            return LowRankConv2d(
                module.in_channels,
                module.out_channels,
                module.kernel_size,  # type: ignore[arg-type]
                r,
                stride=module.stride,  # type: ignore[arg-type]
                padding=module.padding,  # type: ignore[arg-type]
                dilation=module.dilation,  # type: ignore[arg-type]
                bias=module.bias is not None,
                padding_mode=module.padding_mode,
                device=w.device,
                dtype=w.dtype,
            )
        return LowRankConv2d.from_conv(module, r)
    if isinstance(module, nn.LSTM | GateLSTM):
        if isinstance(module, nn.LSTM) and (module.bidirectional or module.proj_size > 0):
            return None
        d, h = module.input_size, module.hidden_size
        r = rank_for(h, d, rank_ratio)
        dense = 4 * d * h + 4 * h * h + 4 * h * h * (module.num_layers - 1) * 2
        low = (4 * d * r + 12 * h * r) + (module.num_layers - 1) * 16 * h * r
        if skip_no_savings and low >= dense:
            return None
        return LowRankLSTM.from_lstm(module, r)
    return None


def factorize(
    model: nn.Module,
    rank_ratio: float,
    keep_full_rank: Iterable[str] = (),
    *,
    keep_first_and_last: bool = True,
    skip_no_savings: bool = True,
    svd_init: bool = True,
) -> nn.Module:
    """A deep copy of ``model`` with its Linear/Conv2d/LSTM layers replaced by low-rank ones.

    Parameters
    ----------
    model:
        The (warmed-up) vanilla model; it is never modified.
    rank_ratio:
        ``rho`` in (0, 1]; each layer gets ``rank_for(a, b, rho)`` (for an LSTM,
        ``rho * min(input_size, hidden_size)``, shared by all gates and layers).
    keep_full_rank:
        Module names (``named_modules()``) left full-rank; a name also keeps everything below it,
        so ``"encoder.layers.0"`` keeps that whole block.
    keep_first_and_last:
        Default ``True``: the first ``nn.Conv2d`` and the last ``nn.Linear`` (the classifier)
        also stay full-rank, as spec section 4 requires of every hybrid model.
    skip_no_savings:
        Default ``True``: a layer whose factorization would not reduce its parameter count
        (``r (a + b) >= a b``) stays full-rank. Set ``False`` to convert at ``rho = 1``.
    svd_init:
        Default ``True``: factors from the truncated SVD of the original weights (spec
        section 5). ``False`` builds the same structure without SVD (Linear and Conv2d factors
        freshly initialised), for a model that will load trained factors anyway.

    Linear layers whose weight is shared with another module (tied embeddings) and grouped
    convs are never converted. Everything else (BatchNorm statistics, biases) is copied as is.
    """
    check_rank_ratio(rank_ratio)
    new = copy.deepcopy(model)
    keep = set(keep_full_rank)
    names = weight_layer_names(new)
    modules = dict(new.named_modules())
    unknown = sorted(keep - set(modules))
    if unknown:
        raise ValueError(
            f"keep_full_rank names no module of the model: {unknown}; weight layers are "
            f"{names[:12]}{' ...' if len(names) > 12 else ''}"
        )
    if keep_first_and_last:
        convs = [n for n in names if isinstance(modules[n], nn.Conv2d)]
        linears = [n for n in names if isinstance(modules[n], nn.Linear)]
        keep.update(convs[:1] + linears[-1:])
    uses: dict[int, int] = {}
    for _, p in new.named_parameters(remove_duplicate=False):
        uses[id(p)] = uses.get(id(p), 0) + 1
    for name in names:
        if name == "" or any(name == k or name.startswith(k + ".") for k in keep):
            continue
        module = modules[name]
        if any(uses[id(p)] > 1 for p in module.parameters(recurse=False)):
            continue
        replacement = _convert(module, rank_ratio, skip_no_savings, svd_init)
        if replacement is None:
            continue
        replacement.train(module.training)
        parent_name, _, attr = name.rpartition(".")
        setattr(new.get_submodule(parent_name), attr, replacement)
    return new


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Conv and Linear multiply-adds per sample for an input of ``input_shape`` (batch first).

    Conv: ``H_out W_out c_out (c_in / groups) k_h k_w``; Linear: ``in * out`` per output row.
    Biases, BatchNorm, activations, pooling and LSTM recurrences are not counted (spec section
    10). Runs one forward pass in eval mode on the model's device (meta works) and restores the
    training flag.
    """
    total = 0

    def hook(module: nn.Module, _inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_out = (module.in_channels // module.groups) * module.weight[0, 0].numel()
            total += out.numel() * per_out
        elif isinstance(module, nn.Linear):
            total += out.numel() * module.in_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None else torch.float32
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(input_shape, device=device, dtype=dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total // input_shape[0]
