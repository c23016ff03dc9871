"""Reference networks (framework-free torch modules) and the model registry.

``create_model("digits_cnn", num_classes=10)`` is how configs name a model; ``register_model``
adds one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from flower_suite.models.cnn import DigitsCNN, LeNet
from flower_suite.models.lstm import CharLSTM
from flower_suite.models.mlp import MLP
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
    "CharLSTM",
    "DigitsCNN",
    "LeNet",
    "ResNet18",
    "count_parameters",
    "create_model",
    "register_model",
]
