"""LSTMs with one bias per gate: the dense ``GateLSTM`` and PUFFERFISH's ``LowRankLSTM``.

Gate order and equations follow ``nn.LSTM`` (i, f, g, o; spec pufferfish.md Eq. 4.1)::

    i = σ(W_ii x + W_hi h + b_i)   f = σ(W_if x + W_hf h + b_f)
    g = tanh(W_ig x + W_hg h + b_g)   o = σ(W_io x + W_ho h + b_o)
    c' = f c + i g,   h' = o tanh(c')

``nn.LSTM`` keeps two bias vectors per gate (``b_ih`` and ``b_hh``); the dissertation's counts
need one (spec section 3.3), so both classes keep a single ``(4, h)`` bias, and conversion from
``nn.LSTM`` sums the two. ``LowRankLSTM`` factorizes every gate's ``W_i*`` (h x d) and ``W_h*``
(h x h) separately with the same rank: ``4 d r + 12 h r`` weights per layer instead of
``4 (d h + h²)``. Both accept ``batch_first`` and return ``(output, (h_n, c_n))`` like
``nn.LSTM``; the recurrence is a plain Python loop over time steps.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flower_suite.models.svd import svd_factors


class _GateLSTMBase(nn.Module):
    """Shared recurrence; subclasses supply the input and hidden projections to ``(.., 4, h)``."""

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int, batch_first: bool, dropout: float
    ) -> None:
        super().__init__()
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError("input_size, hidden_size and num_layers must be positive")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first, self.dropout = batch_first, dropout

    def _in_size(self, layer: int) -> int:
        return self.input_size if layer == 0 else self.hidden_size

    def _project_input(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _project_hidden(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``x`` ``(B, T, d)`` (``batch_first``) or ``(T, B, d)``; ``hx`` two ``(L, B, h)``."""
        if x.dim() != 3:
            raise ValueError(f"expected a 3-d input, got shape {tuple(x.shape)}")
        seq = x if self.batch_first else x.transpose(0, 1)  # (B, T, d)
        batch = seq.shape[0]
        if hx is None:
            zeros = seq.new_zeros(self.num_layers, batch, self.hidden_size)
            hx = (zeros, zeros)
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            gates_x = self._project_input(layer, seq)  # (B, T, 4, h)
            h, c = hx[0][layer], hx[1][layer]
            outputs = []
            for t in range(seq.shape[1]):
                gates = gates_x[:, t] + self._project_hidden(layer, h)
                i, f, g, o = gates.unbind(1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outputs.append(h)
            seq = torch.stack(outputs, dim=1)
            h_n.append(h)
            c_n.append(c)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                seq = nn.functional.dropout(seq, self.dropout, training=True)
        out = seq if self.batch_first else seq.transpose(0, 1)
        return out, (torch.stack(h_n), torch.stack(c_n))


class GateLSTM(_GateLSTMBase):
    """Dense multi-layer LSTM with one bias per gate.

    Layer ``k`` holds ``weight_ih_l{k}`` ``(4h, d_k)``, ``weight_hh_l{k}`` ``(4h, h)`` and
    ``bias_l{k}`` ``(4h,)``, rows in gate order i, f, g, o (as ``nn.LSTM``).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(input_size, hidden_size, num_layers, batch_first, dropout)
        self.bias = bias
        h = hidden_size
        bound = 1.0 / math.sqrt(h)
        for k in range(num_layers):
            shapes: dict[str, tuple[int, ...]] = {
                "weight_ih": (4 * h, self._in_size(k)),
                "weight_hh": (4 * h, h),
            }
            if bias:
                shapes["bias"] = (4 * h,)
            for name, shape in shapes.items():
                param = nn.Parameter(torch.empty(shape))
                nn.init.uniform_(param, -bound, bound)
                setattr(self, f"{name}_l{k}", param)

    def _project_input(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        out = x @ getattr(self, f"weight_ih_l{layer}").T
        if self.bias:
            out = out + getattr(self, f"bias_l{layer}")
        return out.unflatten(-1, (4, self.hidden_size))

    def _project_hidden(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        return (h @ getattr(self, f"weight_hh_l{layer}").T).unflatten(-1, (4, self.hidden_size))


class LowRankLSTM(_GateLSTMBase):
    """Multi-layer LSTM whose eight gate matrices per layer are rank-``rank`` products.

    Layer ``k`` holds ``ih_u_l{k}`` ``(4, r, d_k)``, ``ih_v_l{k}`` ``(4, h, r)``, ``hh_u_l{k}``
    ``(4, r, h)``, ``hh_v_l{k}`` ``(4, h, r)`` (gate ``g``'s input matrix is
    ``ih_v[g] @ ih_u[g]``) and ``bias_l{k}`` ``(4, h)``: ``4 d_k r + 12 h r + 4 h`` parameters.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        rank: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(input_size, hidden_size, num_layers, batch_first, dropout)
        if not 1 <= rank <= min(input_size, hidden_size):
            raise ValueError(f"rank must lie in [1, {min(input_size, hidden_size)}], got {rank}")
        self.rank, self.bias = rank, bias
        h, r = hidden_size, rank
        for k in range(num_layers):
            d = self._in_size(k)
            shapes = {"ih_u": (4, r, d), "ih_v": (4, h, r), "hh_u": (4, r, h), "hh_v": (4, h, r)}
            for name, shape in shapes.items():
                param = nn.Parameter(torch.empty(shape))
                bound = 1.0 / math.sqrt(shape[-1])
                nn.init.uniform_(param, -bound, bound)
                setattr(self, f"{name}_l{k}", param)
            if bias:
                param = nn.Parameter(torch.empty(4, h))
                nn.init.uniform_(param, -1.0 / math.sqrt(h), 1.0 / math.sqrt(h))
                setattr(self, f"bias_l{k}", param)

    def _project_input(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        low = torch.einsum("btd,grd->btgr", x, getattr(self, f"ih_u_l{layer}"))
        out = torch.einsum("btgr,ghr->btgh", low, getattr(self, f"ih_v_l{layer}"))
        return out + getattr(self, f"bias_l{layer}") if self.bias else out

    def _project_hidden(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        low = torch.einsum("bh,grh->bgr", h, getattr(self, f"hh_u_l{layer}"))
        return torch.einsum("bgr,gkr->bgk", low, getattr(self, f"hh_v_l{layer}"))

    def gate_weights(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense ``(4h, d_k)`` input and ``(4h, h)`` recurrent weights this layer represents."""
        w_ih = getattr(self, f"ih_v_l{layer}") @ getattr(self, f"ih_u_l{layer}")
        w_hh = getattr(self, f"hh_v_l{layer}") @ getattr(self, f"hh_u_l{layer}")
        return w_ih.flatten(0, 1), w_hh.flatten(0, 1)

    @classmethod
    def from_lstm(cls, lstm: nn.LSTM | GateLSTM, rank: int) -> LowRankLSTM:
        """Per-gate truncated SVD of ``lstm`` (``nn.LSTM`` biases ``b_ih + b_hh`` are summed)."""
        has_bias = bool(lstm.bias)
        ref = lstm.get_parameter("weight_ih_l0")
        with torch.device(ref.device):
            new = cls(
                lstm.input_size,
                lstm.hidden_size,
                rank,
                num_layers=lstm.num_layers,
                bias=has_bias,
                batch_first=lstm.batch_first,
                dropout=float(lstm.dropout),
            ).to(ref.dtype)
        h = lstm.hidden_size
        with torch.no_grad():
            for k in range(lstm.num_layers):
                for kind in ("ih", "hh"):
                    w = getattr(lstm, f"weight_{kind}_l{k}")
                    for g in range(4):
                        left, right = svd_factors(w[g * h : (g + 1) * h], rank)
                        getattr(new, f"{kind}_u_l{k}")[g].copy_(right)
                        getattr(new, f"{kind}_v_l{k}")[g].copy_(left)
                if has_bias:
                    if isinstance(lstm, nn.LSTM):
                        b = getattr(lstm, f"bias_ih_l{k}") + getattr(lstm, f"bias_hh_l{k}")
                    else:
                        b = getattr(lstm, f"bias_l{k}")
                    getattr(new, f"bias_l{k}").copy_(b.reshape(4, h))
        return new
