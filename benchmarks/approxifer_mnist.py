"""ApproxIFER on real MNIST: accuracy, Byzantine robustness, tail latency and coding overhead.

Issue 16's acceptance (spec ``approxifer.md`` sections 8, 9, 11):

* accuracy for (K, S) in {(8,1), (12,1), (8,2), (8,3)} within 0.05 of the report's MNIST values
  (0.87/0.88, 0.87/0.86, 0.83/0.81, 0.77/0.77; base 0.99) or better, non-increasing in S;
* Byzantine E in {1, 2, 3} at K = 12, S = 0, N = 2(K+E) - 1, sigma in {1, 10, 100};
* p99 latency of coded serving with one straggler per batch delayed 10x at most 1.2x the
  no-straggler latency, while uncoded serving's p99 grows (real Ray actors);
* encode + decode + locate under 5 % of worker inference time.

Model: LeNet (``flower_suite.models.LeNet``) trained centrally on the 60,000 MNIST training
images (``--epochs``, SGD), cached in ``--cache``. Accuracy follows the authors' protocol
(spec section 8): per iteration K random test images, N coded queries through the model, S random
workers dropped (or E random workers corrupted with N(0, sigma^2) on their logits), decode,
argmax against the labels; ``base`` is the uncoded model on the same images. This part runs the
model in-process (the serving path's outputs equal this computation, see
``tests/serving/test_predictor.py``). Latency uses ``CodedPredictor``, ``UncodedPredictor`` and
``ReplicationPredictor`` over one pool of Ray actors.

    python benchmarks/approxifer_mnist.py                    # ~5-8 minutes on 2 CPU cores
    python benchmarks/approxifer_mnist.py --iterations 200 --latency-batches 60
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch
from torch import nn

from flower_suite.coding.approxifer_locator import robust_decode
from flower_suite.coding.berrut import berrut_decode, encoding_matrix
from flower_suite.data import load_mnist_idx
from flower_suite.models import LeNet, ResNet18
from flower_suite.serving import (
    CodedPredictor,
    InjectionPlan,
    ReplicationPredictor,
    UncodedPredictor,
    WorkerPool,
)

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
REPORT_KS = {
    (8, 1): (0.87, 0.88),
    (12, 1): (0.87, 0.86),
    (8, 2): (0.83, 0.81),
    (8, 3): (0.77, 0.77),
}
REPORT_E = {1: (0.97, 0.98), 2: (0.95, 0.97), 3: (0.93, 0.97)}  # ResNet-18, sigma = 1


def train_lenet(data_dir: str, epochs: int, samples: int, cache: Path, seed: int = 0) -> nn.Module:
    """LeNet trained centrally on the first ``samples`` MNIST training images (SGD, momentum
    0.9, batch 64, ``epochs`` passes), cached on disk."""
    model = LeNet()
    if cache.is_file():
        model.load_state_dict(torch.load(cache, weights_only=True))
        return model.eval()
    torch.manual_seed(seed)
    train = load_mnist_idx(data_dir, "train")
    x, y = torch.from_numpy(train.x[:samples]), torch.from_numpy(train.y[:samples])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        begin = time.perf_counter()
        perm = torch.from_numpy(rng.permutation(len(x)))
        for start in range(0, len(x), 64):
            idx = perm[start : start + 64]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
        print(f"  epoch {epoch + 1}: {time.perf_counter() - begin:.0f} s", flush=True)
    torch.save(model.state_dict(), cache)
    return model.eval()


def logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = [model(torch.from_numpy(x[i : i + 2048])) for i in range(0, len(x), 2048)]
    return torch.cat(out).double().numpy()


def coded_round_logits(
    model: nn.Module, images: np.ndarray, k: int, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """All iterations at once: ``images`` (T, K, 1, 28, 28) -> worker logits (T, N, C)."""
    a = encoding_matrix(k, n)
    coded = np.einsum("nk,tkd->tnd", a, images.reshape(*images.shape[:2], -1))
    out = logits(model, coded.reshape(-1, *images.shape[2:]).astype(np.float32))
    return out.reshape(images.shape[0], n, -1), a


def straggler_accuracy(
    model: nn.Module, x: np.ndarray, y: np.ndarray, k: int, s: int, n: int, iters: int, seed: int
) -> tuple[float, float]:
    """(coded, base) accuracy over ``iters`` iterations of the authors' protocol."""
    rng = np.random.default_rng(seed)
    picks = np.stack([rng.choice(len(x), k, replace=False) for _ in range(iters)])
    worker_logits, _ = coded_round_logits(model, x[picks], k, n)
    correct = 0
    for t in range(iters):
        dropped = set(rng.choice(n, s, replace=False).tolist())
        kept = [i for i in range(n) if i not in dropped]
        decoded = berrut_decode(worker_logits[t, kept], kept, k, n)
        correct += int((decoded.argmax(1) == y[picks[t]]).sum())
    base = float((logits(model, x[picks.ravel()]).argmax(1) == y[picks.ravel()]).mean())
    return correct / (iters * k), base


def byzantine_accuracy(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    e: int,
    sigmas: tuple[float, ...],
    iters: int,
    seed: int,
) -> dict[float, tuple[float, float, float]]:
    """Per sigma: (accuracy, exact location rate, accuracy without the locator), K = 12, S = 0.

    The worker logits are computed once per E and corrupted afresh for each sigma."""
    k, n = 12, 2 * (12 + e) - 1
    rng = np.random.default_rng(seed)
    picks = np.stack([rng.choice(len(x), k, replace=False) for _ in range(iters)])
    worker_logits, _ = coded_round_logits(model, x[picks], k, n)
    out = {}
    for sigma in sigmas:
        correct = located = naive = 0
        for t in range(iters):
            values = worker_logits[t].copy()
            bad = np.sort(rng.choice(n, e, replace=False))
            values[bad] += rng.normal(0.0, sigma, size=(e, values.shape[1]))
            result = robust_decode(values, range(n), k, n, e)
            correct += int((result.outputs.argmax(1) == y[picks[t]]).sum())
            located += result.flagged == tuple(bad.tolist())
            plain = berrut_decode(values, range(n), k, n)
            naive += int((plain.argmax(1) == y[picks[t]]).sum())
        out[sigma] = (correct / (iters * k), located / iters, naive / (iters * k))
    return out


def median_time(fn: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - begin)
    return float(np.median(times))


def overhead(model: nn.Module, x: np.ndarray, repeats: int) -> list[tuple[str, float, float]]:
    """(setting, coding seconds per batch, worker inference seconds per coded query)."""
    torch.set_num_threads(1)
    rows = []
    rng = np.random.default_rng(0)
    resnet = ResNet18(in_channels=1).eval()
    for name, net in (("LeNet", model), ("ResNet-18 (1x28x28)", resnet)):
        with torch.no_grad():
            one = torch.from_numpy(x[:1])
            infer = median_time(lambda net=net, one=one: net(one), repeats)
        for k, s, e in ((12, 1, 0), (12, 0, 3)):
            n = 2 * (k + e) - 1 + s if e else k + s
            a = torch.tensor(encoding_matrix(k, n))
            batch = torch.from_numpy(x[:k].reshape(k, -1)).double()
            values = rng.normal(size=(n - s, 10))
            enc = median_time(lambda a=a, batch=batch: (a @ batch).float(), repeats)
            dec = median_time(
                lambda v=values, k=k, n=n, e=e: robust_decode(v, range(len(v)), k, n, e), repeats
            )
            rows.append((f"{name}, K={k}, S={s}, E={e}", enc + dec, infer))
    torch.set_num_threads(2)
    return rows


def latency(model: nn.Module, x: np.ndarray, batches: int, seed: int) -> dict[str, np.ndarray]:
    """Per-batch latencies (s) on Ray: K = 8, N = 9 workers, one straggler per batch or none.

    The six settings are interleaved batch by batch (same queries, same moment), so the load
    of a shared machine hits them alike."""
    k, s, n = 8, 1, 9
    pool = WorkerPool(model, n)
    pool.wait_ready(timeout_s=300)
    shape = tuple(x.shape[1:])
    predictors = {
        "coded": CodedPredictor(pool, shape, k, s, timeout_s=30.0),
        "uncoded": UncodedPredictor(pool, shape, k, timeout_s=30.0),
        "replication": ReplicationPredictor(pool, shape, k, n, replicas=2, timeout_s=30.0),
    }
    for predictor in predictors.values():  # warm-up
        predictor.predict(x[: 5 * k])
    normal = float(np.median(predictors["uncoded"].predict(x[: 30 * k]).latencies_s))
    delay = 9.0 * normal  # the straggler answers after 10x the normal batch latency
    plan = InjectionPlan(stragglers_per_batch=1, straggler_delay_s=delay, seed=seed)
    out: dict[str, list[float]] = {}
    for b in range(batches):
        batch = x[b * k : (b + 1) * k]
        for name, predictor in predictors.items():
            for label, chosen in (
                ("no straggler", None),
                (f"1 straggler (+{delay * 1e3:.0f} ms)", plan),
            ):
                behaviours = {} if chosen is None else chosen.behaviours(b, predictor.num_workers)
                outcome = predictor.predict_batch(batch, behaviours)
                out.setdefault(f"{name}, {label}", []).append(outcome.latency_s)
    pool.shutdown()
    return {name: np.array(values) for name, values in out.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(MNIST_DIR))
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--train-samples", type=int, default=60_000)
    p.add_argument("--cache", default="", help="trained model file (default: in /tmp, by setting)")
    p.add_argument("--iterations", type=int, default=200, help="iterations per accuracy cell")
    p.add_argument("--latency-batches", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv), flush=True)
    torch.set_num_threads(2)
    begin = time.perf_counter()
    cache = Path(
        args.cache or f"/tmp/approxifer_lenet_e{args.epochs}_n{args.train_samples}_s{args.seed}.pt"
    )
    model = train_lenet(args.data, args.epochs, args.train_samples, cache, args.seed)
    test = load_mnist_idx(args.data, "test")
    x, y = test.x, test.y
    print(f"LeNet test accuracy: {(logits(model, x).argmax(1) == y).mean():.4f}", flush=True)
    print("\n| (K, S) | N | ApproxIFER | base | report (authors / reproduction) |")
    print("|---|---|---|---|---|")
    for (k, s), ref in REPORT_KS.items():
        acc, base = straggler_accuracy(model, x, y, k, s, k + s, args.iterations, args.seed)
        print(f"| ({k},{s}) | {k + s} | {acc:.3f} | {base:.3f} | {ref[0]:.2f} / {ref[1]:.2f} |")
    for k in (8, 12):
        acc, base = straggler_accuracy(model, x, y, k, 1, 2 * k + 1, args.iterations, args.seed)
        print(f"| ({k},1) | {2 * k + 1} (2K+1) | {acc:.3f} | {base:.3f} | - |", flush=True)
    print("\n| E | sigma | N | ApproxIFER | located exactly | no locator | report (R18) |")
    print("|---|---|---|---|---|---|---|")
    for e in (1, 2, 3):
        cells = byzantine_accuracy(model, x, y, e, (1.0, 10.0, 100.0), args.iterations, args.seed)
        for sigma, (acc, loc, naive) in cells.items():
            ref = f"{REPORT_E[e][0]:.2f} / {REPORT_E[e][1]:.2f}" if sigma == 1.0 else "-"
            n = 2 * (12 + e) - 1
            print(f"| {e} | {sigma:g} | {n} | {acc:.3f} | {loc:.2f} | {naive:.3f} | {ref} |")
    print("\n| coding overhead | encode+decode+locate (ms/batch) | inference (ms/query) | ratio |")
    print("|---|---|---|---|")
    for name, coding, infer in overhead(model, x, 200):
        print(f"| {name} | {coding * 1e3:.3f} | {infer * 1e3:.3f} | {coding / infer:.3f} |")
    os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="fs-ray-", dir="/tmp"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        lat = latency(model, x, args.latency_batches, args.seed)
    finally:
        ray.shutdown()
    print("\n| serving (K=8, 9 workers) | p50 ms | p99 ms |")
    print("|---|---|---|")
    for name, values in lat.items():
        p50, p99 = np.percentile(values, [50, 99]) * 1e3
        print(f"| {name} | {p50:.1f} | {p99:.1f} |")
    names = list(lat)
    for plain, slow in zip(names[0::2], names[1::2], strict=True):
        ratio = np.percentile(lat[slow], 99) / np.percentile(lat[plain], 99)
        print(f"p99 ratio {slow.split(',')[0]}: straggler / none = {ratio:.2f}")
    print(f"\ntotal {time.perf_counter() - begin:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
