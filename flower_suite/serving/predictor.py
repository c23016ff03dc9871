"""``CodedPredictor``: ApproxIFER's straggler- and Byzantine-resilient prediction serving
(Soleymani et al., AAAI 2022, Sections 3-4; spec §10).

Queries are grouped in batches of ``K``; each batch is Berrut-encoded into ``N`` coded queries
(one per worker), sent to a :class:`~flower_suite.serving.pool.WorkerPool`, and decoded from the
first ``wait_for`` usable answers (``N - S`` by default). With ``E > 0`` the error locator
flags up to ``E`` lying workers before decoding. Missing, late, crashed, NaN or misshapen
answers are stragglers; a batch with too few usable answers raises
:class:`InsufficientResultsError` instead of guessing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn

from flower_suite.coding.approxifer_locator import (
    check_code_sizes,
    default_num_workers,
    required_results,
    robust_decode,
)
from flower_suite.coding.berrut import POINT_KINDS, berrut_decode, encoding_matrix
from flower_suite.coding.laplace import LaplaceMechanism
from flower_suite.serving.behaviour import InjectionPlan, WorkerBehaviour, screen_output
from flower_suite.serving.pool import OUTPUT_SPACES, WorkerPool, gather


class InsufficientResultsError(TimeoutError):
    """A batch got fewer usable answers than decoding needs before its deadline."""


@dataclass
class BatchOutcome:
    """One batch: decoded outputs ``(K, C)``, flagged/straggling workers, timings (seconds)."""

    outputs: np.ndarray
    flagged: tuple[int, ...]
    stragglers: tuple[int, ...]
    failed: dict[int, str]
    used: tuple[int, ...]  # the workers whose answers were decoded
    latency_s: float
    encode_s: float
    decode_s: float


@dataclass
class Prediction:
    """Predicted classes and outputs per query, and one :class:`BatchOutcome` per batch."""

    predictions: np.ndarray
    outputs: np.ndarray
    batches: list[BatchOutcome] = field(default_factory=list)

    @property
    def flagged(self) -> list[tuple[int, ...]]:
        return [b.flagged for b in self.batches]

    @property
    def latencies_s(self) -> np.ndarray:
        return np.array([b.latency_s for b in self.batches])


def check_queries(queries: object, input_shape: tuple[int, ...]) -> np.ndarray:
    """``queries`` as float32 ``(n, *input_shape)``; a clear ValueError otherwise."""
    array = np.asarray(queries)
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"queries must be numeric, not {array.dtype}")
    if array.ndim != len(input_shape) + 1 or tuple(array.shape[1:]) != input_shape:
        raise ValueError(
            f"queries must have shape (n, {', '.join(map(str, input_shape))}), got {array.shape}"
        )
    if array.shape[0] == 0:
        raise ValueError("queries is empty")
    if not np.all(np.isfinite(array)):
        raise ValueError("queries contain NaN or inf")
    return array.astype(np.float32, copy=False)


def probe_output_shape(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The model's output shape for one input (a ValueError if it rejects ``input_shape``)."""
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros((1, *input_shape)))
    except RuntimeError as err:
        raise ValueError(f"the model does not accept inputs of shape {input_shape}: {err}") from err
    if out.ndim != 2:
        raise ValueError(f"the model must return (batch, classes), got {tuple(out.shape)}")
    return (int(out.shape[1]),)


def pad_batch(queries: np.ndarray, start: int, size: int) -> np.ndarray:
    """Queries ``start .. start+size-1``, the last one repeated past the end (spec §10)."""
    batch = queries[start : start + size]
    if batch.shape[0] < size:
        pad = np.repeat(batch[-1:], size - batch.shape[0], axis=0)
        batch = np.concatenate([batch, pad])
    return batch


class BatchPredictor(Protocol):
    """What :func:`predict_in_batches` serves with (the coded predictor and the baselines)."""

    num_queries: int
    num_workers: int
    output_shape: tuple[int, ...]

    def predict_batch(
        self, batch: np.ndarray, behaviours: Mapping[int, WorkerBehaviour] | None = None
    ) -> BatchOutcome: ...


def predict_in_batches(
    predictor: BatchPredictor, array: np.ndarray, plan: InjectionPlan | None = None
) -> Prediction:
    """Serve checked queries ``array`` in batches of ``K`` (the last one padded), with the
    plan's injected behaviours per batch; the argmax per query."""
    n, k = array.shape[0], predictor.num_queries
    outputs = np.empty((n, *predictor.output_shape))
    result = Prediction(np.empty(n, dtype=np.int64), outputs)
    for start in range(0, n, k):
        behaviours = {} if plan is None else plan.behaviours(start // k, predictor.num_workers)
        outcome = predictor.predict_batch(pad_batch(array, start, k), behaviours)
        stop = min(start + k, n)
        outputs[start:stop] = outcome.outputs[: stop - start]
        result.batches.append(outcome)
    result.predictions[:] = outputs.argmax(axis=1)
    return result


class CodedPredictor:
    """ApproxIFER serving over ``pool`` (or a fresh pool of ``N`` actors for a model).

    Parameters
    ----------
    pool : WorkerPool or nn.Module
        The workers (at least ``N``; the first ``N`` are used), or a model to start them for.
    input_shape : tuple of int
        Shape of one query (e.g. ``(1, 28, 28)``).
    num_queries : int
        ``K``, queries per batch.
    max_stragglers, max_byzantine : int, default 0
        ``S`` and ``E``.
    num_workers : int, optional
        ``N``; default ``K + S`` (``E = 0``) or ``2(K+E) + S - 1``.
    points : {"cheb2_N", "cheb2_lobatto"}, default "cheb2_N"
    decode_space : {"logits", "probs"}, default "logits"
    wait_for : int, optional
        Answers to wait for, default ``N - S``; at least ``K`` or ``2(K+E) - 1``.
    timeout_s : float, default 10.0
        Per-batch deadline; answers not in by then are stragglers.
    dp : LaplaceMechanism, optional
        Laplace noise at the workers or on the decoded outputs (needs ``decode_space="probs"``
        unless its sensitivity is declared for clipped logits by the caller).
    locator_basis : {"chebyshev", "monomial"}, default "chebyshev"
    seed : int, default 0
    """

    def __init__(
        self,
        pool: WorkerPool | nn.Module,
        input_shape: tuple[int, ...],
        num_queries: int,
        max_stragglers: int = 0,
        max_byzantine: int = 0,
        num_workers: int | None = None,
        *,
        points: str = "cheb2_N",
        decode_space: str = "logits",
        wait_for: int | None = None,
        timeout_s: float = 10.0,
        dp: LaplaceMechanism | None = None,
        locator_basis: str = "chebyshev",
        seed: int = 0,
    ) -> None:
        n = num_workers
        if n is None:
            n = default_num_workers(num_queries, max_stragglers, max_byzantine)
        check_code_sizes(num_queries, n, max_stragglers, max_byzantine)
        if points not in POINT_KINDS:
            raise ValueError(f"points must be one of {POINT_KINDS}, not {points!r}")
        if decode_space not in OUTPUT_SPACES:
            raise ValueError(f"decode_space must be one of {OUTPUT_SPACES}, not {decode_space!r}")
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be a finite number > 0, not {timeout_s}")
        self.min_results = required_results(num_queries, max_byzantine)
        wait = n - max_stragglers if wait_for is None else wait_for
        if not self.min_results <= wait <= n:
            raise ValueError(f"wait_for must be in [{self.min_results}, N={n}], not {wait}")
        if not isinstance(pool, WorkerPool | nn.Module):
            raise ValueError(
                f"pool must be a WorkerPool or an nn.Module, not {type(pool).__name__}"
            )
        self.input_shape = tuple(int(d) for d in input_shape)
        model = pool.model if isinstance(pool, WorkerPool) else pool
        self.output_shape = probe_output_shape(model, self.input_shape)
        if isinstance(pool, WorkerPool) and pool.size < n:
            raise ValueError(f"the pool has {pool.size} workers, N={n} are needed")
        if isinstance(pool, WorkerPool):
            self.pool = pool
        else:  # a fresh pool: wait until its actors have loaded the model
            self.pool = WorkerPool(pool, n)
            self.pool.wait_ready()
        self.num_queries, self.num_workers = num_queries, n
        self.max_stragglers, self.max_byzantine = max_stragglers, max_byzantine
        self.points, self.decode_space, self.wait_for = points, decode_space, wait
        self.timeout_s, self.dp, self.locator_basis = timeout_s, dp, locator_basis
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._encoder = torch.tensor(encoding_matrix(num_queries, n, points))  # A, float64
        self._batches_served = 0

    def check_alive(self) -> None:
        """A ValueError when fewer of the ``N`` workers are alive than decoding needs."""
        alive = [i for i in self.pool.alive() if i < self.num_workers]
        if len(alive) < self.min_results:
            raise ValueError(
                f"too few workers alive: {len(alive)} of N={self.num_workers}, decoding needs "
                f"{self.min_results}"
            )

    def predict(self, queries: object, plan: InjectionPlan | None = None) -> Prediction:
        """Serve ``queries`` (``(n, *input_shape)``) in batches of ``K``; argmax per query."""
        array = check_queries(queries, self.input_shape)
        self.check_alive()
        return predict_in_batches(self, array, plan)

    def predict_batch(
        self, batch: np.ndarray, behaviours: Mapping[int, WorkerBehaviour] | None = None
    ) -> BatchOutcome:
        """Encode one batch of ``K`` queries, dispatch, gather, locate and decode it."""
        batch = check_queries(batch, self.input_shape)
        if batch.shape[0] != self.num_queries:
            raise ValueError(f"a batch must hold K={self.num_queries} queries, not {len(batch)}")
        behaviours = behaviours or {}
        begin = time.perf_counter()
        flat = torch.from_numpy(np.ascontiguousarray(batch).reshape(len(batch), -1)).double()
        coded = (self._encoder @ flat).float().numpy()
        coded_np = coded.reshape((self.num_workers, 1, *self.input_shape))
        encode_s = time.perf_counter() - begin
        base_seed = int(self._rng.integers(2**31))
        alive = set(self.pool.alive())
        requests = {
            self.pool.submit(
                i,
                coded_np[i],
                self.decode_space,
                behaviours.get(i),
                self.dp,
                base_seed + i,
            ): i
            for i in range(self.num_workers)
            if i in alive
        }
        expected = (1, *self.output_shape)
        got = gather(requests, self.wait_for, self.timeout_s, lambda v: screen_output(v, expected))
        self.pool.handle_dead(got.dead)
        start_decode = time.perf_counter()
        outputs, flagged = self._decode(got.answers)
        used = tuple(i for i in sorted(got.answers) if i not in flagged)
        decode_s = time.perf_counter() - start_decode
        self._batches_served += 1
        return BatchOutcome(
            outputs=outputs,
            flagged=flagged,
            stragglers=tuple(sorted([*got.missing, *got.failed])),
            failed=got.failed,
            used=used,
            latency_s=time.perf_counter() - begin,
            encode_s=encode_s,
            decode_s=decode_s,
        )

    def _decode(self, answers: Mapping[int, np.ndarray]) -> tuple[np.ndarray, tuple[int, ...]]:
        if len(answers) < self.min_results:
            raise InsufficientResultsError(
                f"only {len(answers)} usable answers of N={self.num_workers} within "
                f"{self.timeout_s} s; decoding needs {self.min_results}"
            )
        returned = sorted(answers)
        values = np.stack([answers[i][0] for i in returned])
        flagged: tuple[int, ...] = ()
        if self.max_byzantine > 0:
            decoded = robust_decode(
                values,
                returned,
                self.num_queries,
                self.num_workers,
                self.max_byzantine,
                self.points,
                self.locator_basis,
            )
            outputs, flagged = decoded.outputs, decoded.flagged
        else:
            outputs = berrut_decode(
                values, returned, self.num_queries, self.num_workers, self.points
            )
        if self.dp is not None and self.dp.where == "master":
            outputs = self.dp.apply(outputs, self._rng)
        return outputs, flagged
