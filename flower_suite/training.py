"""Local training and evaluation of a torch model on an in-memory data set.

Framework-free: the ClientApp, the server-side evaluation and the benchmarks all call these.
Batches are drawn by a seeded permutation of in-memory tensors (no DataLoader workers), so a
run is reproducible bit for bit on the same machine, which DETOX's majority vote relies on.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from flower_suite.data.dataset import ArrayDataset


@dataclass(frozen=True)
class TrainConfig:
    """Client hyper-parameters. ``proximal_mu`` > 0 adds FedProx's (mu/2)||w - w_global||^2."""

    local_epochs: int = 1
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 32
    proximal_mu: float = 0.0

    def __post_init__(self) -> None:
        for name in ("lr", "momentum", "weight_decay", "proximal_mu"):
            value = getattr(self, name)
            if not math.isfinite(value):  # NaN or Inf would train silently into garbage
                raise ValueError(f"{name} must be a finite number, not {value}")
        if self.local_epochs < 1:
            raise ValueError(f"local_epochs must be >= 1, not {self.local_epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, not {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), not {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, not {self.weight_decay}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {self.batch_size}")
        if self.proximal_mu < 0:
            raise ValueError(f"proximal_mu must be >= 0, not {self.proximal_mu}")

    @classmethod
    def wire_keys(cls) -> dict[str, str]:
        """ConfigRecord key -> field: each hyper-parameter travels under its kebab-case name
        (``local-epochs``, ``proximal-mu``, as Flower's FedProx sends it)."""
        return {name.replace("_", "-"): name for name in cls.hyper_parameters()}

    @classmethod
    def hyper_parameters(cls) -> tuple[str, ...]:
        """The field names: the one declaration the config, server and client derive from."""
        return tuple(f.name for f in dataclasses.fields(TrainConfig))

    def to_wire(self) -> dict[str, int | float]:
        """The hyper-parameters as a round's ConfigRecord carries them."""
        return {key: getattr(self, name) for key, name in self.wire_keys().items()}

    def train_config(self) -> TrainConfig:
        """Just the hyper-parameters (a subclass may carry more, e.g. the run's lr schedule)."""
        return TrainConfig(**{name: getattr(self, name) for name in self.hyper_parameters()})


@dataclass(frozen=True)
class TrainResult:
    """Mean training loss over the last epoch, samples seen per epoch, optimizer steps."""

    loss: float
    num_examples: int
    steps: int


@dataclass(frozen=True)
class EvalResult:
    """Mean cross-entropy, accuracy and the number of evaluated samples."""

    loss: float
    accuracy: float
    num_examples: int


def select_device() -> torch.device:
    """CUDA when a GPU is visible (Ray sets CUDA_VISIBLE_DEVICES per client), else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _tensors(data: ArrayDataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(data.x, device=device), torch.as_tensor(data.y, device=device)


def train(
    model: nn.Module,
    data: ArrayDataset,
    config: TrainConfig,
    *,
    seed: int,
    device: torch.device | None = None,
    step_hook: Callable[[nn.Module, int], None] | None = None,
) -> TrainResult:
    """Run ``config.local_epochs`` epochs of SGD on ``data`` in place; return the statistics.

    ``step_hook(model, steps)``, if given, runs after every optimizer step with the number of
    steps taken so far (the PGD attacker projects there); it may modify the parameters in
    place. Raises ``FloatingPointError`` if the loss becomes NaN/Inf, so a diverging client
    fails loudly instead of sending a poisoned model.
    """
    if len(data) == 0:
        raise ValueError(f"{data.name}: cannot train on an empty data set")
    device = device or select_device()
    model.to(device).train()
    x, y = _tensors(data, device)
    torch.manual_seed(seed)  # dropout and any other in-model randomness
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    anchor = [p.detach().clone() for p in model.parameters()] if config.proximal_mu > 0 else None
    steps, epoch_loss = 0, 0.0
    for epoch in range(config.local_epochs):
        order = torch.randperm(len(data), generator=generator).to(device)
        total, seen = 0.0, 0
        for start in range(0, len(data), config.batch_size):
            idx = order[start : start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            if anchor is not None:
                # Gradient of (mu/2)||w - w_global||^2, added directly (cheaper than autograd).
                with torch.no_grad():
                    for p, p0 in zip(model.parameters(), anchor, strict=True):
                        if p.grad is not None:
                            p.grad.add_(p.detach() - p0, alpha=config.proximal_mu)
            optimizer.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"training diverged on {data.name}: loss {value} at epoch {epoch}, "
                    f"step {steps}; lower the learning rate"
                )
            total += value * len(idx)
            seen += len(idx)
            steps += 1
            if step_hook is not None:
                step_hook(model, steps)
        epoch_loss = total / seen
    return TrainResult(loss=epoch_loss, num_examples=len(data), steps=steps)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: ArrayDataset,
    *,
    batch_size: int = 512,
    device: torch.device | None = None,
) -> EvalResult:
    """Mean cross-entropy loss and accuracy of ``model`` on ``data``."""
    if len(data) == 0:
        raise ValueError(f"{data.name}: cannot evaluate on an empty data set")
    device = device or select_device()
    model.to(device).eval()
    x, y = _tensors(data, device)
    loss_sum, correct = 0.0, 0
    for start in range(0, len(data), batch_size):
        logits = model(x[start : start + batch_size])
        target = y[start : start + batch_size]
        loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
        correct += int((logits.argmax(dim=1) == target).sum())
    n = len(data)
    return EvalResult(loss=loss_sum / n, accuracy=correct / n, num_examples=n)
