"""ATOMO vs QSGD vs TernGrad: variance of each estimator at equal bytes on real layer updates,
and encode / decode time (spec ``atomo.md`` §2.4-2.6; issue 14's "variance at equal bytes").

    python benchmarks/atomo_variance.py                  # MLP and DigitsCNN, 200 MC draws
    python benchmarks/atomo_variance.py --draws 50 --repeats 3   # quick

The update of each model is two SGD steps (batch 32, lr 0.1, seed 0) from its seeded
initialization on the digits training split, ``Δ = w_2 - w_0`` per parameter. For every weight
layer (2-D or conv) and every *reference* (1/2/4-bit QSGD, TernGrad, spectral-ATOMO with s = 1
and 2), the reference's expected message bytes set the budget; entry-wise ATOMO and
spectral-ATOMO are then given the budget ``s`` whose expected bytes equal it (entry-wise by
bisection on its byte formula, spectral by ``s = (B - fixed) / (4(n + m))``; a budget that
buys every atom gives variance 0). Variances are relative, ``E‖ĝ - Δ‖² / ‖Δ‖²``: the exact
formula of each compressor (``Compressor.variance``) and a Monte Carlo estimate over
``--draws`` real encode/decode round trips (in brackets) that checks it. Bytes are whole
messages (header included), expected; the measured mean is within noise of it (see tests).

Timing: ``compress`` / ``decompress`` of the whole update (every parameter, biases included),
median of ``--repeats``, with ``--threads`` torch threads (1 by default, as a Ray worker with
one CPU has).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from flower_suite.compression import (
    COMPRESSORS,
    Compressor,
    EntrywiseAtomo,
    SpectralAtomo,
    layouts_of,
    spectral_decomposition,
    spectral_matrix_shape,
    spectral_message_bytes,
)
from flower_suite.data import load_digits_split
from flower_suite.models import MLP, DigitsCNN

REFERENCES: list[tuple[str, Callable[[], Compressor]]] = [
    ("QSGD 1-bit", lambda: COMPRESSORS.create("qsgd", bits=1)),
    ("QSGD 2-bit", lambda: COMPRESSORS.create("qsgd", bits=2)),
    ("QSGD 4-bit", lambda: COMPRESSORS.create("qsgd", bits=4)),
    ("TernGrad", lambda: COMPRESSORS.create("terngrad")),
    ("spectral s=1", lambda: COMPRESSORS.create("atomo_spectral", budget=1.0)),
    ("spectral s=2", lambda: COMPRESSORS.create("atomo_spectral", budget=2.0)),
]
TIMED: list[tuple[str, dict[str, float]]] = [
    ("none", {}),
    ("qsgd", {"bits": 1}),
    ("qsgd", {"bits": 4}),
    ("terngrad", {}),
    ("atomo_entrywise", {"budget": 100.0}),
    ("atomo_spectral", {"budget": 1.0}),
    ("atomo_spectral", {"budget": 2.0}),
]


def digits_train() -> tuple[torch.Tensor, torch.Tensor]:
    train, _ = load_digits_split()
    return torch.from_numpy(train.x), torch.from_numpy(train.y)


def layer_updates(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 2, batch: int = 32
) -> dict[str, torch.Tensor]:
    """``Δ = w_steps - w_0`` per parameter after ``steps`` plain SGD steps (lr 0.1)."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(steps):
        idx = order[step * batch : (step + 1) * batch]
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        optimizer.step()
    return {k: (v.detach() - before[k]) for k, v in model.named_parameters()}


def entrywise_budget_for(tensor: torch.Tensor, target_bytes: float) -> float:
    """The entry-wise ATOMO budget whose expected bytes equal ``target_bytes`` (bisection)."""
    low, high = 1e-9, float(tensor.numel())
    if EntrywiseAtomo(high).expected_bytes(tensor) <= target_bytes:
        return high
    for _ in range(60):
        mid = math.sqrt(low * high)
        low, high = (
            (mid, high)
            if EntrywiseAtomo(mid).expected_bytes(tensor) < target_bytes
            else (
                low,
                mid,
            )
        )
    return low


def spectral_budget_for(tensor: torch.Tensor, target_bytes: float) -> float:
    """The spectral budget whose expected bytes equal ``target_bytes`` (capped at the rank)."""
    matrix = spectral_matrix_shape(tuple(tensor.shape))
    assert matrix is not None
    _, sigma, _ = spectral_decomposition(tensor.reshape(matrix), precision=tensor.dtype)
    fixed = spectral_message_bytes(tuple(tensor.shape), matrix, 0)
    rank = max(1, int((sigma > 0).sum()))
    return max(1e-9, min(float(rank), (target_bytes - fixed) / (4 * sum(matrix))))


def monte_carlo_variance(compressor: Compressor, tensor: torch.Tensor, draws: int) -> float:
    generator = torch.Generator().manual_seed(1)
    layout = layouts_of({"t": tensor})["t"]
    total = 0.0
    for _ in range(draws):
        decoded = compressor.decompress_tensor(
            compressor.compress_tensor(tensor, generator), layout
        )
        total += float(((decoded.double() - tensor.double()) ** 2).sum())
    return total / draws


def relative(value: float, norm2: float) -> str:
    return f"{value / norm2:.3g}"


def variance_rows(model_name: str, update: dict[str, torch.Tensor], draws: int) -> list[str]:
    rows = []
    for name, tensor in update.items():
        matrix = spectral_matrix_shape(tuple(tensor.shape))
        if matrix is None:
            continue
        norm2 = float((tensor.double() ** 2).sum())
        for label, make in REFERENCES:
            reference = make()
            target = reference.expected_bytes(tensor)
            entrywise = EntrywiseAtomo(entrywise_budget_for(tensor, target))
            spectral = SpectralAtomo(spectral_budget_for(tensor, target))
            cells = []
            for compressor in (reference, entrywise, spectral):
                exact = relative(compressor.variance(tensor), norm2)
                measured = relative(monte_carlo_variance(compressor, tensor, draws), norm2)
                cells.append(f"{exact} ({measured})")
            rows.append(
                f"| {model_name} | {name} | {matrix[0]}x{matrix[1]} | {label} | {target:,.0f} | "
                f"{cells[0]} | {cells[1]} s={entrywise.budget:.3g} | "
                f"{cells[2]} s={spectral.budget:.3g} |"
            )
    return rows


def theorem_3_8_rows(model_name: str, update: dict[str, torch.Tensor]) -> list[str]:
    """Per layer: rank, ‖X‖_F²/‖X‖₂² (stable rank) and Theorem 3.8's ratio
    ``(n + m)‖X‖_*² / ‖X‖₁,₁²`` (spectral has the smaller second moment iff it is <= 1, at
    budgets where both are balanced)."""
    rows = []
    for name, tensor in update.items():
        matrix = spectral_matrix_shape(tuple(tensor.shape))
        if matrix is None:
            continue
        _, sigma, _ = spectral_decomposition(tensor.reshape(matrix), precision=tensor.dtype)
        l11 = float(tensor.double().abs().sum())
        ratio = sum(matrix) * float(sigma.sum()) ** 2 / l11**2
        stable = float((sigma**2).sum() / sigma[0] ** 2)
        rows.append(
            f"| {model_name} | {name} | {matrix[0]}x{matrix[1]} | {int((sigma > 0).sum())} | "
            f"{stable:.2f} | {ratio:.3g} | {'spectral' if ratio <= 1 else 'entry-wise'} |"
        )
    return rows


def timing_rows(model_name: str, update: dict[str, torch.Tensor], repeats: int) -> list[str]:
    rows = []
    layouts = layouts_of(update)
    norm2 = sum(float((t.double() ** 2).sum()) for t in update.values())
    dense = COMPRESSORS.create("none").payload_bytes(
        COMPRESSORS.create("none").compress(update, torch.Generator())
    )
    for name, kwargs in TIMED:
        compressor = COMPRESSORS.create(name, **kwargs)
        encode_s, decode_s = [], []
        payload: dict[str, bytes] = {}
        for repeat in range(repeats):
            generator = torch.Generator().manual_seed(repeat)
            start = time.perf_counter()
            payload = compressor.compress(update, generator)
            encode_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            compressor.decompress(payload, layouts)
            decode_s.append(time.perf_counter() - start)
        size = sum(compressor.expected_bytes(t) for t in update.values())
        variance = sum(compressor.variance(t) for t in update.values())
        label = name + "".join(f" {k}={v:g}" for k, v in kwargs.items())
        rows.append(
            f"| {model_name} | {label} | {size:,.0f} | {dense / size:.1f}x | "
            f"{variance / norm2:.3g} | {1e3 * statistics.median(encode_s):.2f} | "
            f"{1e3 * statistics.median(decode_s):.2f} |"
        )
    return rows


def time_training(model: nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int) -> float:
    """Median seconds of the two SGD steps that made the update (for scale)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        layer_updates(model, x, y)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=200, help="Monte Carlo round trips")
    parser.add_argument("--repeats", type=int, default=7, help="timing repeats (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"python benchmarks/atomo_variance.py --draws {args.draws} --repeats {args.repeats} "
        f"--threads {args.threads}\n"
    )
    models = {"MLP": MLP, "DigitsCNN": DigitsCNN}
    x, y = digits_train()
    updates = {}
    for model_name, factory in models.items():
        torch.manual_seed(0)
        updates[model_name] = layer_updates(factory(), x, y)
    print("Relative variance E‖ĝ-Δ‖²/‖Δ‖² at equal expected bytes: exact (Monte Carlo).\n")
    print(
        "| model | layer | matrix | bytes set by | bytes | reference | entry-wise ATOMO "
        "| spectral ATOMO |"
    )
    print("|---|---|---|---|---:|---|---|---|")
    for model_name, update in updates.items():
        print("\n".join(variance_rows(model_name, update, args.draws)))
    print("\nTheorem 3.8 per layer (which decomposition has the smaller second moment).\n")
    print("| model | layer | matrix | rank | stable rank | (n+m)‖X‖*²/‖X‖₁,₁² | predicted |")
    print("|---|---|---|---:|---:|---:|---|")
    for model_name, update in updates.items():
        print("\n".join(theorem_3_8_rows(model_name, update)))
    print("\nWhole update (all parameters), median encode / decode time.\n")
    print("| model | compressor | E[bytes] | vs dense | rel. variance | encode ms | decode ms |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for model_name, update in updates.items():
        print("\n".join(timing_rows(model_name, update, args.repeats)))
    for model_name, factory in models.items():
        torch.manual_seed(0)
        seconds = time_training(factory(), x, y, args.repeats)
        print(f"\n{model_name}: the two SGD steps (batch 32) take {1e3 * seconds:.2f} ms.")


if __name__ == "__main__":
    main()
