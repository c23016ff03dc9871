"""A pool of Ray actors that each hold the same torch model (ApproxIFER, AAAI 2022, Section 3;
spec §3, §10).

Each :class:`ModelWorker` actor holds one replica of the model (any ``nn.Module``; e.g. the
global model of a Flower run loaded from ``model.pt``) and answers ``predict`` requests. Its
methods are ``async``, so an injected straggler delay (``asyncio.sleep``) neither blocks the
worker's next request nor survives :func:`ray.cancel`: the master cancels every answer it no
longer waits for. :func:`gather` collects the first answers to arrive within a deadline and
turns everything else (late, crashed, malformed) into stragglers. A worker whose actor died is
re-created by :meth:`WorkerPool.replace`.

Ray must already be initialised (``ray.init``) by the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
import torch
from ray.exceptions import GetTimeoutError, RayActorError, RayError
from torch import nn

from flower_suite.coding.laplace import LaplaceMechanism
from flower_suite.serving.behaviour import WorkerBehaviour

OUTPUT_SPACES: tuple[str, ...] = ("logits", "probs")


class ModelWorkerImpl:
    """One model replica (CPU, ``threads`` torch threads); answers batches of inputs."""

    def __init__(self, model: nn.Module, threads: int = 1) -> None:
        torch.set_num_threads(threads)
        self.model = model.eval()

    async def ready(self) -> bool:
        return True

    async def predict(
        self,
        inputs: np.ndarray,
        output: str = "logits",
        behaviour: WorkerBehaviour | None = None,
        dp: LaplaceMechanism | None = None,
        seed: int = 0,
    ) -> np.ndarray:
        """``f(inputs)`` as float64 ``(B, C)`` (softmax for ``"probs"``), then worker-side DP
        noise and the injected behaviour (delay, corruption)."""
        if behaviour is not None and behaviour.delay_s > 0:
            await asyncio.sleep(behaviour.delay_s)
        with torch.no_grad():
            logits = self.model(torch.from_numpy(np.ascontiguousarray(inputs)))
            out = torch.softmax(logits, dim=-1) if output == "probs" else logits
        values = out.double().numpy()
        rng = np.random.default_rng(seed)
        if dp is not None and dp.where == "worker":
            values = dp.apply(values, rng)
        if behaviour is not None:
            values = behaviour.corrupt(values, rng)
        return values


# The Ray actor class (no CPU reserved: serving actors share the node's cores).
ModelWorker = ray.remote(num_cpus=0)(ModelWorkerImpl)


@dataclass
class Gathered:
    """The answers of one round of requests: the usable ones by worker id, the rest with why."""

    answers: dict[int, np.ndarray] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)  # crashed or malformed
    missing: list[int] = field(default_factory=list)  # no answer before the deadline / enough
    dead: list[int] = field(default_factory=list)  # their actor died: replace it


def gather(
    requests: Mapping[Any, int],
    wanted: int,
    timeout_s: float,
    screen: Callable[[object], str | None],
    cancel_rest: bool = True,
) -> Gathered:
    """Wait for ``wanted`` usable answers (``requests``: object ref -> worker id) or the deadline.

    Answers are screened as they arrive (``screen`` returns why one is unusable, or None); an
    unusable or failed answer is a straggler, never an exception. The requests still pending at
    the end are listed in ``missing`` and cancelled (unless ``cancel_rest`` is False).
    """
    result = Gathered()
    pending = list(requests)
    deadline = time.perf_counter() + timeout_s
    while pending and len(result.answers) < wanted:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            break
        ready, pending = ray.wait(pending, num_returns=1, timeout=remaining)
        for ref in ready:
            _collect(ref, requests[ref], screen, result)
    for ref in pending:
        result.missing.append(requests[ref])
        if cancel_rest:
            cancel(ref)
    return result


def cancel(ref: Any) -> None:
    """Cancel a request whose answer is no longer needed (no-op when it already finished)."""
    with contextlib.suppress(RayError, ValueError, TypeError):
        ray.cancel(ref)


def _collect(
    ref: Any, worker: int, screen: Callable[[object], str | None], result: Gathered
) -> None:
    try:
        value = ray.get(ref, timeout=0)
    except RayActorError as err:
        result.failed[worker] = f"actor died: {type(err).__name__}"
        result.dead.append(worker)
        return
    except (RayError, GetTimeoutError) as err:
        result.failed[worker] = f"request failed: {type(err).__name__}"
        return
    reason = screen(value)
    if reason is None:
        result.answers[worker] = value
    else:
        result.failed[worker] = reason


class WorkerPool:
    """``num_workers`` Ray actors holding copies of ``model`` (Ray must be running).

    ``max_replacements`` bounds how many dead actors the pool re-creates over its life; past
    it, a dead worker stays dead and :meth:`alive` counts it out.
    """

    def __init__(
        self,
        model: nn.Module,
        num_workers: int,
        *,
        threads_per_worker: int = 1,
        max_concurrency: int = 16,
        max_replacements: int = 100,
    ) -> None:
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f"num_workers must be a positive integer, not {num_workers!r}")
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch nn.Module, not {type(model).__name__}")
        if not ray.is_initialized():
            raise ValueError("Ray is not running: call ray.init(...) before creating a WorkerPool")
        self.model = model.eval()
        self.threads_per_worker = threads_per_worker
        self.max_concurrency = max_concurrency
        self.replacements_left = max_replacements
        self._model_ref = ray.put(self.model)
        self.actors: list[Any] = [self._spawn() for _ in range(num_workers)]
        self._dead: set[int] = set()

    def _spawn(self) -> Any:
        options = {"max_concurrency": self.max_concurrency}
        return ModelWorker.options(**options).remote(self._model_ref, self.threads_per_worker)

    @property
    def size(self) -> int:
        return len(self.actors)

    def alive(self) -> list[int]:
        """Worker ids whose actor is believed alive (dead ones are replaced when budget allows)."""
        return [i for i in range(self.size) if i not in self._dead]

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Block until every live actor has started (model loaded), or raise TimeoutError."""
        refs = {self.actors[i].ready.remote(): i for i in self.alive()}
        try:
            ray.get(list(refs), timeout=timeout_s)
        except GetTimeoutError as err:
            raise TimeoutError(f"worker actors not ready after {timeout_s} s") from err
        except RayActorError:
            for ref, i in refs.items():
                try:
                    ray.get(ref, timeout=timeout_s)
                except RayActorError:
                    self.replace(i)

    def submit(
        self,
        worker: int,
        inputs: np.ndarray,
        output: str = "logits",
        behaviour: WorkerBehaviour | None = None,
        dp: LaplaceMechanism | None = None,
        seed: int = 0,
    ) -> Any:
        """Send one request to ``worker``; returns the object ref of its answer."""
        return self.actors[worker].predict.remote(inputs, output, behaviour, dp, seed)

    def replace(self, worker: int) -> bool:
        """Re-create the actor of ``worker`` (after it died); False when out of budget."""
        with contextlib.suppress(RayError, ValueError):
            ray.kill(self.actors[worker], no_restart=True)
        if self.replacements_left <= 0:
            self._dead.add(worker)
            return False
        self.replacements_left -= 1
        self.actors[worker] = self._spawn()
        self._dead.discard(worker)
        return True

    def kill(self, worker: int) -> None:
        """Kill a worker's actor, as a crash would (for experiments and tests)."""
        ray.kill(self.actors[worker], no_restart=True)

    def handle_dead(self, workers: Sequence[int]) -> None:
        for worker in workers:
            self.replace(worker)

    def shutdown(self) -> None:
        for actor in self.actors:
            with contextlib.suppress(RayError, ValueError):
                ray.kill(actor, no_restart=True)
        self.actors = []
