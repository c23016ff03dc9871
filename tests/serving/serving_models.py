"""A small trained model on the digits for the serving tests (imported by name: the test
folders have no ``__init__.py``, and ``conftest`` is a name every folder's conftest shares)."""

from __future__ import annotations

import torch
from torch import nn

from flower_suite.data import ArrayDataset, load_digits_split
from flower_suite.models import MLP


def trained_digits_model(steps: int = 200, seed: int = 0) -> tuple[nn.Module, ArrayDataset]:
    """The 64-64-10 MLP trained full-batch (Adam) on the digits' training split, and the test
    split (~0.95 test accuracy in about a second)."""
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: one thread is faster here
    train, test = load_digits_split()
    model = MLP()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    torch.set_num_threads(threads)
    return model.eval(), test
