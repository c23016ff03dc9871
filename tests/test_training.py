"""The framework-free local training loop against slow references."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from flower_suite.data import ArrayDataset, load_digits_split
from flower_suite.models import MLP
from flower_suite.training import TrainConfig, evaluate, train

TRAIN, TEST = load_digits_split()


def test_training_lowers_loss_and_raises_accuracy() -> None:
    """Five epochs of SGD on digits beat chance by far."""
    torch.manual_seed(0)
    model = MLP()
    before = evaluate(model, TEST, device=torch.device("cpu"))
    train(model, TRAIN, TrainConfig(local_epochs=5, lr=0.1), seed=0, device=torch.device("cpu"))
    after = evaluate(model, TEST, device=torch.device("cpu"))
    assert after.loss < before.loss
    assert after.accuracy > 0.85


def test_one_full_batch_step_matches_manual_sgd() -> None:
    """One full-batch step without momentum equals w - lr * grad computed by hand."""
    torch.manual_seed(0)
    model = MLP()
    reference = copy.deepcopy(model)
    data = TRAIN.subset(np.arange(64))
    cfg = TrainConfig(local_epochs=1, lr=0.1, momentum=0.0, batch_size=64)
    train(model, data, cfg, seed=1, device=torch.device("cpu"))
    loss = F.cross_entropy(reference(torch.as_tensor(data.x)), torch.as_tensor(data.y))
    grads = torch.autograd.grad(loss, list(reference.parameters()))
    for p, p0, g in zip(model.parameters(), reference.parameters(), grads, strict=True):
        torch.testing.assert_close(p.detach(), p0.detach() - 0.1 * g, rtol=1e-5, atol=1e-6)


def test_proximal_term_matches_autograd_reference() -> None:
    """FedProx: two full-batch steps equal autograd of loss + mu/2 ||w - w_start||^2.

    On the first step w equals the anchor (the term is zero), so the second step is where the
    gradient shortcut is exercised.
    """
    torch.manual_seed(0)
    model = MLP()
    reference = copy.deepcopy(model)
    data = TRAIN.subset(np.arange(32))
    mu, lr = 0.5, 0.1
    cfg = TrainConfig(local_epochs=2, lr=lr, momentum=0.0, batch_size=32, proximal_mu=mu)
    train(model, data, cfg, seed=0, device=torch.device("cpu"))

    x, y = torch.as_tensor(data.x), torch.as_tensor(data.y)
    anchor = [p.detach().clone() for p in reference.parameters()]
    params = list(reference.parameters())
    for _ in range(2):
        prox = sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))
        grads = torch.autograd.grad(F.cross_entropy(reference(x), y) + mu / 2 * prox, params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.sub_(lr * g)
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)


def test_proximal_pull_towards_global_model() -> None:
    """With a large mu, several epochs stay closer to the starting weights than mu = 0."""
    torch.manual_seed(0)
    start = MLP()

    def drift(mu: float) -> float:
        model = copy.deepcopy(start)
        cfg = TrainConfig(local_epochs=3, lr=0.05, proximal_mu=mu)
        train(model, TRAIN, cfg, seed=0, device=torch.device("cpu"))
        return sum(
            float(((p.detach() - q.detach()) ** 2).sum())
            for p, q in zip(model.parameters(), start.parameters(), strict=True)
        )

    assert drift(5.0) < 0.5 * drift(0.0)


def test_evaluate_matches_reference() -> None:
    """Batched evaluation equals one full-batch computation."""
    torch.manual_seed(0)
    model = MLP().eval()
    result = evaluate(model, TEST, batch_size=7, device=torch.device("cpu"))
    with torch.no_grad():
        logits = model(torch.as_tensor(TEST.x))
        loss = float(F.cross_entropy(logits, torch.as_tensor(TEST.y)))
        acc = float((logits.argmax(1) == torch.as_tensor(TEST.y)).float().mean())
    assert result.loss == pytest.approx(loss, rel=1e-5)
    assert result.accuracy == pytest.approx(acc)
    assert result.num_examples == len(TEST)


@pytest.mark.parametrize(
    ("field", "value"),
    [("local_epochs", 0), ("lr", 0.0), ("momentum", 1.0), ("batch_size", 0), ("proximal_mu", -1)],
)
def test_train_config_rejects_bad_values(field: str, value: float) -> None:
    """Out-of-range hyper-parameters are refused with the field name."""
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_empty_data_is_refused() -> None:
    """Training or evaluating on no data raises instead of returning NaN."""
    empty = ArrayDataset(np.zeros((0, 1, 8, 8), np.float32), np.zeros(0, np.int64), 10, "empty")
    with pytest.raises(ValueError, match="empty"):
        train(MLP(), empty, TrainConfig(), seed=0)
    with pytest.raises(ValueError, match="empty"):
        evaluate(MLP(), empty)
