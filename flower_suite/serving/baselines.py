"""Uncoded and replicated serving, the baselines of ApproxIFER's latency comparison
(Soleymani et al., AAAI 2022, Section 5; spec §10).

- :class:`UncodedPredictor`: query ``j`` of a batch of ``K`` goes to worker ``j``; the batch
  waits for all ``K`` answers (one straggler delays the whole batch).
- :class:`ReplicationPredictor`: the same ``N`` workers as the coded predictor; every query is
  sent to ``replicas`` distinct workers (copy ``c`` of query ``j`` is slot ``cK + j``, slot
  ``s`` goes to worker ``s mod N``), so each worker evaluates about ``replicas·K/N`` queries;
  a query is answered by its first usable copy, the batch when every query is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

import numpy as np

from flower_suite.coding.berrut import check_num_workers
from flower_suite.serving.behaviour import InjectionPlan, WorkerBehaviour, screen_output
from flower_suite.serving.pool import WorkerPool, cancel, gather
from flower_suite.serving.predictor import (
    BatchOutcome,
    InsufficientResultsError,
    Prediction,
    check_queries,
    predict_in_batches,
    probe_output_shape,
)


def replication_assignment(num_queries: int, num_workers: int, replicas: int) -> list[list[int]]:
    """Worker ``i`` -> the queries it evaluates; every query on ``replicas`` distinct workers."""
    check_num_workers(num_queries, num_workers)
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise ValueError(f"replicas must be an integer, not {replicas!r}")
    if not 1 <= replicas <= num_workers:
        raise ValueError(f"replicas must be in [1, N={num_workers}], not {replicas}")
    assignment: list[list[int]] = [[] for _ in range(num_workers)]
    for slot in range(replicas * num_queries):
        assignment[slot % num_workers].append(slot % num_queries)
    for queries in assignment:
        if len(set(queries)) != len(queries):
            raise ValueError(
                f"replicas={replicas} copies of K={num_queries} queries do not fit on "
                f"N={num_workers} distinct workers"
            )
    return assignment


class _BaselinePredictor:
    """Shared batching for the baselines: ``assignment[i]`` = queries of worker ``i``."""

    def __init__(
        self,
        pool: WorkerPool,
        input_shape: tuple[int, ...],
        num_queries: int,
        assignment: list[list[int]],
        timeout_s: float,
    ) -> None:
        if pool.size < len(assignment):
            raise ValueError(f"the pool has {pool.size} workers, {len(assignment)} are needed")
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be a finite number > 0, not {timeout_s}")
        self.pool, self.num_queries, self.assignment = pool, num_queries, assignment
        self.num_workers = len(assignment)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.output_shape = probe_output_shape(pool.model, self.input_shape)
        self.timeout_s = timeout_s

    def predict(self, queries: object, plan: InjectionPlan | None = None) -> Prediction:
        return predict_in_batches(self, check_queries(queries, self.input_shape), plan)

    def predict_batch(
        self, batch: np.ndarray, behaviours: Mapping[int, WorkerBehaviour] | None = None
    ) -> BatchOutcome:
        batch = check_queries(batch, self.input_shape)
        if batch.shape[0] != self.num_queries:
            raise ValueError(f"a batch must hold K={self.num_queries} queries, not {len(batch)}")
        behaviours = behaviours or {}
        begin = time.perf_counter()
        alive = set(self.pool.alive())
        requests = {
            self.pool.submit(i, batch[queries], "logits", behaviours.get(i)): i
            for i, queries in enumerate(self.assignment)
            if queries and i in alive
        }
        outputs = np.full((self.num_queries, *self.output_shape), np.nan)
        answered = np.zeros(self.num_queries, dtype=bool)
        pending = dict(requests)
        failed: dict[int, str] = {}
        used: list[int] = []
        deadline = begin + self.timeout_s
        while not answered.all() and pending and time.perf_counter() < deadline:
            remaining = deadline - time.perf_counter()
            got = gather(pending, 1, remaining, self._screen, cancel_rest=False)
            self.pool.handle_dead(got.dead)
            failed.update(got.failed)
            for worker, value in got.answers.items():
                idx = self.assignment[worker]
                if value.shape[0] != len(idx):
                    failed[worker] = f"answer has {value.shape[0]} rows, expected {len(idx)}"
                    continue
                used.append(worker)
                new = ~answered[idx]
                outputs[np.asarray(idx)[new]] = value[new]
                answered[idx] = True
            done = {*got.answers, *got.failed}
            pending = {ref: i for ref, i in pending.items() if i not in done}
        for ref in pending:  # late copies: no longer needed
            cancel(ref)
        if not answered.all():
            raise InsufficientResultsError(
                f"{int((~answered).sum())} of K={self.num_queries} queries got no usable "
                f"answer within {self.timeout_s} s"
            )
        return BatchOutcome(
            outputs=outputs,
            flagged=(),
            stragglers=tuple(sorted([*failed, *pending.values()])),
            failed=failed,
            used=tuple(sorted(used)),
            latency_s=time.perf_counter() - begin,
            encode_s=0.0,
            decode_s=0.0,
        )

    def _screen(self, value: object) -> str | None:
        """Usable: a finite ``(b, C)`` array (``b`` is checked against the worker's queries)."""
        if isinstance(value, np.ndarray) and value.ndim == 2 and value.shape[0] >= 1:
            return screen_output(value, (value.shape[0], *self.output_shape))
        return screen_output(value, (1, *self.output_shape))


class UncodedPredictor(_BaselinePredictor):
    """Query ``j`` -> worker ``j`` (``K`` workers); waits for all ``K`` answers."""

    def __init__(
        self,
        pool: WorkerPool,
        input_shape: tuple[int, ...],
        num_queries: int,
        timeout_s: float = 10.0,
    ) -> None:
        check_num_workers(num_queries, num_queries)
        assignment = [[j] for j in range(num_queries)]
        super().__init__(pool, input_shape, num_queries, assignment, timeout_s)


class ReplicationPredictor(_BaselinePredictor):
    """Every query on ``replicas`` of ``N`` workers; the first usable copy answers it."""

    def __init__(
        self,
        pool: WorkerPool,
        input_shape: tuple[int, ...],
        num_queries: int,
        num_workers: int,
        replicas: int = 2,
        timeout_s: float = 10.0,
    ) -> None:
        assignment = replication_assignment(num_queries, num_workers, replicas)
        super().__init__(pool, input_shape, num_queries, assignment, timeout_s)
