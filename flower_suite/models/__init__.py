"""Reference networks, PUFFERFISH low-rank layers (framework-free torch) and the registry.

``create_model("digits_cnn", num_classes=10)`` is how configs name a model; ``register_model``
adds one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from flower_suite.models.cnn import DigitsCNN, LeNet
from flower_suite.models.lowrank import (
    LowRankConv2d,
    LowRankLinear,
    LowRankLSTM,
    count_macs,
    factorize,
)
from flower_suite.models.lstm import CharLSTM
from flower_suite.models.mlp import MLP
from flower_suite.models.pufferfish import VGG19BN
from flower_suite.models.resnet import ResNet18
from flower_suite.models.vgg import VGG9
from flower_suite.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")
MODELS.register("mlp", MLP)
MODELS.register("digits_cnn", DigitsCNN)
MODELS.register("lenet", LeNet)
MODELS.register("vgg9", VGG9)
MODELS.register("resnet18", ResNet18)
MODELS.register("char_lstm", CharLSTM)
MODELS.register("vgg19_bn", VGG19BN)


def register_model(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make ``factory`` available to experiment configs as ``model.name = name``."""
    MODELS.register(name, factory)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate the registered model ``name``."""
    return MODELS.create(name, **kwargs)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (BatchNorm running statistics are buffers and not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "MLP",
    "MODELS",
    "VGG9",
    "VGG19BN",
    "CharLSTM",
    "DigitsCNN",
    "LeNet",
    "LowRankConv2d",
    "LowRankLSTM",
    "LowRankLinear",
    "ResNet18",
    "count_macs",
    "count_parameters",
    "create_model",
    "factorize",
    "register_model",
]
