"""Float64 functional forwards for state dicts of any width (FedMA tests)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def _t(value: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value, dtype=np.float64))


def mlp_forward(state: Mapping[str, Any], names: list[str], x: torch.Tensor) -> torch.Tensor:
    """Linear-ReLU stack; ``names`` are the Linear module prefixes in order."""
    h = x
    for k, name in enumerate(names):
        h = F.linear(h, _t(state[f"{name}.weight"]), _t(state[f"{name}.bias"]))
        if k < len(names) - 1:
            h = torch.relu(h)
    return h


def cnn_forward(state: Mapping[str, Any], x: torch.Tensor) -> torch.Tensor:
    """DigitsCNN: conv-relu-conv-relu-pool-flatten-fc-relu-fc."""
    h = torch.relu(F.conv2d(x, _t(state["features.0.weight"]), _t(state["features.0.bias"]), 1, 1))
    h = torch.relu(F.conv2d(h, _t(state["features.2.weight"]), _t(state["features.2.bias"]), 1, 1))
    h = F.max_pool2d(h, 2).flatten(1)
    h = torch.relu(F.linear(h, _t(state["classifier.1.weight"]), _t(state["classifier.1.bias"])))
    return F.linear(h, _t(state["classifier.3.weight"]), _t(state["classifier.3.bias"]))


def lstm_forward(state: Mapping[str, Any], tokens: torch.Tensor) -> torch.Tensor:
    """CharLSTM written out by hand (gate order i, f, g, o), decoder on the last step."""
    emb = _t(state["embedding.weight"])[tokens]
    w_ih, w_hh = _t(state["lstm.weight_ih_l0"]), _t(state["lstm.weight_hh_l0"])
    bias = _t(state["lstm.bias_ih_l0"]) + _t(state["lstm.bias_hh_l0"])
    hidden = w_hh.shape[1]
    h = torch.zeros(tokens.shape[0], hidden, dtype=torch.float64)
    c = torch.zeros_like(h)
    for t in range(tokens.shape[1]):
        gates = emb[:, t] @ w_ih.T + h @ w_hh.T + bias
        i, f, g, o = gates.split(hidden, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
    return F.linear(h, _t(state["decoder.weight"]), _t(state["decoder.bias"]))
