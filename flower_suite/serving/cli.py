"""``python -m flower_suite.serving MODEL_PT``: serve a saved model with ApproxIFER on a test set.

Loads a ``state_dict`` (``model.pt`` of a run directory; the model's name and keyword
arguments come from ``--model`` / ``--model-kwargs`` or from the ``config.toml`` beside it),
starts a pool of Ray actors, serves the test set with :class:`CodedPredictor` (optionally
with injected stragglers and Byzantine workers) and reports the uncoded model's accuracy, the
coded accuracy and per-batch latency (p50 / p99). Exit status 0, or 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from torch import nn

from flower_suite.coding.approxifer_locator import check_code_sizes, default_num_workers
from flower_suite.coding.laplace import LaplaceMechanism
from flower_suite.data import load_dataset
from flower_suite.models import create_model
from flower_suite.serving.behaviour import InjectionPlan, WorkerBehaviour
from flower_suite.serving.predictor import CodedPredictor


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m flower_suite.serving",
        description="Serve a saved model with ApproxIFER coded computing on Ray.",
    )
    p.add_argument("model_pt", help="state_dict file (model.pt of a run directory)")
    p.add_argument("--dataset", default=None, help="data set name (default: the run's, or digits)")
    p.add_argument("--data-path", default="", help="directory of file-based data (MNIST IDX)")
    p.add_argument("--model", default=None, help="registered model name (default: the run's)")
    p.add_argument("--model-kwargs", default="{}", help="JSON keyword arguments of the model")
    p.add_argument("-K", "--num-queries", type=int, default=8, help="queries per batch")
    p.add_argument("-S", "--stragglers", type=int, default=1, help="stragglers tolerated")
    p.add_argument("-E", "--byzantine", type=int, default=0, help="Byzantine workers tolerated")
    p.add_argument("-N", "--num-workers", type=int, default=None, help="workers (default K+S)")
    p.add_argument("--wait-for", type=int, default=None, help="answers to wait for (N-S)")
    p.add_argument("--decode-space", choices=("logits", "probs"), default="logits")
    p.add_argument("--limit", type=int, default=0, help="serve only the first LIMIT queries")
    p.add_argument("--timeout-s", type=float, default=10.0, help="per-batch deadline")
    p.add_argument("--inject-stragglers", type=int, default=0, help="slow workers per batch")
    p.add_argument("--straggler-delay-s", type=float, default=0.0)
    p.add_argument("--inject-byzantine", type=int, default=0, help="lying workers per batch")
    p.add_argument("--sigma", type=float, default=1.0, help="Byzantine Gaussian noise std")
    p.add_argument("--dp-epsilon", type=float, default=None, help="Laplace DP epsilon")
    p.add_argument("--dp-l1-sensitivity", type=float, default=2.0)
    p.add_argument("--dp-where", choices=("worker", "master"), default="worker")
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs given to Ray")
    p.add_argument("--seed", type=int, default=0)
    return p


def run_config(model_pt: Path) -> dict[str, Any]:
    """The ``config.toml`` beside ``model_pt`` (a run directory), or ``{}``."""
    path = model_pt.parent / "config.toml"
    if not path.is_file():
        return {}
    with path.open("rb") as fh:
        return tomllib.load(fh)


def load_model(
    model_pt: Path, name: str | None, kwargs: dict[str, Any], config: dict[str, Any]
) -> nn.Module:
    """Instantiate the model (name/kwargs from the arguments, else the run's config) and load
    ``model_pt`` into it; a ValueError names what is missing or does not match."""
    model_cfg = dict(config.get("model", {}))
    chosen = name or model_cfg.pop("name", None)
    if chosen is None:
        raise ValueError("--model: no model name given and no config.toml beside the model file")
    if name is None:
        kwargs = {**model_cfg, **kwargs}
    try:
        model = create_model(chosen, **kwargs)
    except (KeyError, TypeError) as err:
        raise ValueError(f"--model: cannot build {chosen!r} with {kwargs}: {err}") from err
    try:
        state = torch.load(model_pt, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (RuntimeError, OSError, EOFError) as err:
        raise ValueError(f"{model_pt}: not a state_dict of {chosen!r}: {err}") from err
    return model.eval()


def _plan(args: argparse.Namespace) -> InjectionPlan | None:
    if not (args.inject_stragglers or args.inject_byzantine):
        return None
    return InjectionPlan(
        stragglers_per_batch=args.inject_stragglers,
        straggler_delay_s=args.straggler_delay_s,
        byzantine_per_batch=args.inject_byzantine,
        byzantine=WorkerBehaviour(byzantine="gaussian", sigma=args.sigma),
        seed=args.seed,
    )


def serve(args: argparse.Namespace) -> dict[str, Any]:
    """Run the serving experiment of ``args``; returns the report (Ray started and stopped)."""
    model_pt = Path(args.model_pt)
    if not model_pt.is_file():
        raise ValueError(f"model file {model_pt} does not exist")
    config = run_config(model_pt)
    dataset = args.dataset or config.get("data", {}).get("dataset", "digits")
    n = args.num_workers
    if n is None:
        n = default_num_workers(args.num_queries, args.stragglers, args.byzantine)
    check_code_sizes(args.num_queries, n, args.stragglers, args.byzantine)  # before Ray
    model = load_model(model_pt, args.model, json.loads(args.model_kwargs), config)
    _, test = load_dataset(dataset, args.data_path or config.get("data", {}).get("path", ""))
    x, y = test.x, test.y
    if args.limit > 0:
        x, y = x[: args.limit], y[: args.limit]
    with torch.no_grad():
        base = float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
    dp = None
    if args.dp_epsilon is not None:
        dp = LaplaceMechanism(args.dp_epsilon, args.dp_l1_sensitivity, args.dp_where)
    started = not ray.is_initialized()  # a caller's running Ray is used and left running
    if started:
        os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="fs-ray-", dir="/tmp"))
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    predictor: CodedPredictor | None = None
    try:
        predictor = CodedPredictor(
            model,
            tuple(x.shape[1:]),
            args.num_queries,
            args.stragglers,
            args.byzantine,
            n,
            decode_space=args.decode_space,
            wait_for=args.wait_for,
            timeout_s=args.timeout_s,
            dp=dp,
            seed=args.seed,
        )
        predictor.pool.wait_ready()
        result = predictor.predict(x, _plan(args))
    finally:
        if predictor is not None:
            predictor.pool.shutdown()
        if started:
            ray.shutdown()
    latency = result.latencies_s
    return {
        "dataset": dataset,
        "queries": len(y),
        "K": predictor.num_queries,
        "N": predictor.num_workers,
        "S": predictor.max_stragglers,
        "E": predictor.max_byzantine,
        "base_accuracy": base,
        "coded_accuracy": float((result.predictions == y).mean()),
        "latency_p50_ms": float(np.percentile(latency, 50) * 1e3),
        "latency_p99_ms": float(np.percentile(latency, 99) * 1e3),
        "batches_with_flags": sum(1 for f in result.flagged if f),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: prints the report; 2 (with the reason on stderr) for bad input."""
    args = build_parser().parse_args(argv)
    try:
        report = serve(args)
    except (ValueError, FileNotFoundError, KeyError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for key, value in report.items():
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"{key:>20}: {text}")
    return 0
