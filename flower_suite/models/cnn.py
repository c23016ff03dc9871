"""Small convolutional networks: one sized for 8x8 digits, and LeNet for 28x28 MNIST."""

from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions (padding 1), one 2x2 max-pool, two linear layers.

    Sized for 1x8x8 input: conv 1->16, conv 16->32, pool to 32x4x4 = 512 features, fc 512->64,
    fc 64->classes. No BatchNorm by default, so FedMA can match every layer; ``batch_norm=True``
    adds a BatchNorm2d after each convolution (running statistics and the 0-d
    ``num_batches_tracked`` counter travel with the model, as in ResNet-18).
    """

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, width: int = 16, batch_norm: bool = False
    ) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            conv: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1)]
            return [*conv, nn.BatchNorm2d(c_out), nn.ReLU()] if batch_norm else [*conv, nn.ReLU()]

        self.features = nn.Sequential(
            *block(in_channels, width), *block(width, 2 * width), nn.MaxPool2d(2)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * 4 * 4, 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class LeNet(nn.Module):
    """LeNet for 1x28x28 input as in the FedMA and edge-case backdoor code bases.

    conv 5x5 1->20, pool, conv 5x5 20->50, pool, fc 800->500, fc 500->classes:
    431,080 parameters for 10 classes (the dissertation's "431k", Table 5.3).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 20, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(20, 50, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(50 * 4 * 4, 500),
            nn.ReLU(),
            nn.Linear(500, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
