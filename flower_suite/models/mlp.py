"""A multilayer perceptron; the 64-64-10 default is the spec's model for 8x8 digits."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """Flatten, then Linear-ReLU blocks and a linear classifier.

    With the defaults (64 inputs, one hidden layer of 64, 10 classes) it has
    64*64 + 64 + 64*10 + 10 = 4,810 parameters.
    """

    def __init__(
        self, in_features: int = 64, hidden: Sequence[int] = (64,), num_classes: int = 10
    ) -> None:
        super().__init__()
        widths = [in_features, *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for w_in, w_out in itertools.pairwise(widths):
            layers += [nn.Linear(w_in, w_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
