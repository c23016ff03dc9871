"""One BLAS / OpenMP thread for the compression tests, restored afterwards.

The codec runs many tiny LAPACK calls (SVDs of 20 x 10 matrices, SLSQP's dense solves). On a
busy shared 2-core machine each one pays OpenMP spin-waits: a 20 x 10 SVD measured ~23 ms with
torch's 2 threads against ~0.1 ms with one. Threads buy nothing at these sizes, so the tests
use one (as a Ray worker with one CPU does) and give the previous setting back.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(previous)
