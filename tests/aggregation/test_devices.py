"""GPU path: every registered rule gives the CPU result on CUDA tensors (skipped without CUDA)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from flower_suite.aggregation import AGGREGATORS

CONFIGS: dict[str, dict[str, Any]] = {
    "mean": {},
    "krum": {"num_malicious_nodes": 2},
    "multi_krum": {"num_malicious_nodes": 2},
    "median": {},
    "trimmed_mean": {"beta": 0.2},
    "bulyan": {"num_malicious_nodes": 2},
    "geometric_median": {"max_iter": 10, "tol": 0.0},
    "sign_majority": {},
    "centered_clipping": {"tau": 1.0, "iterations": 2},
}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(name: str, dtype: torch.dtype) -> None:
    # prepare
    x = torch.randn(11, 3000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[[1, 4]] += 10.0
    x = x.to(dtype)
    w = torch.linspace(1.0, 2.0, 11, dtype=dtype)
    rule = AGGREGATORS.get(name)
    # execute
    cpu = rule(x, w, **CONFIGS[name])
    gpu = rule(x.cuda(), w.cuda(), **CONFIGS[name])
    # assert
    assert gpu.aggregate.device.type == "cuda" and gpu.aggregate.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(gpu.aggregate.cpu(), cpu.aggregate, rtol=tol, atol=tol)
    assert gpu.selected == cpu.selected
