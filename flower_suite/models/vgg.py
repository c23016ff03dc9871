"""VGG-9 for 3x32x32 input, the FedMA dissertation's CIFAR-10 network (Table 5.4)."""

from __future__ import annotations

import torch
from torch import nn


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]


class VGG9(nn.Module):
    """Six 3x3 convolutions and three linear layers, ReLU, no BatchNorm: 3,491,530 parameters.

    32->64 pool | 64->128->128 pool dropout 0.05 | 128->256->256 pool dropout 0.1 |
    fc 4096->512->512 dropout 0.1 -> classes (dissertation section 5.5, Table 5.4).
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv(in_channels, 32),
            *_conv(32, 64),
            nn.MaxPool2d(2),
            *_conv(64, 128),
            *_conv(128, 128),
            nn.MaxPool2d(2),
            nn.Dropout(0.05),
            *_conv(128, 256),
            *_conv(256, 256),
            nn.MaxPool2d(2),
            nn.Dropout(0.1),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(256 * 4 * 4, 512),
            nn.ReLU(),
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(512, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
