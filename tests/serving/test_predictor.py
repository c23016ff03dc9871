"""CodedPredictor and the baselines on real Ray actors (spec approxifer.md §10, §11.4, §11.6).

One Ray runtime and one pool of four actors holding a DigitsCNN trained on the digits serve
every test. Decoded outputs are compared with a local reference (the same model on the coded
queries, Berrut-decoded from the workers the predictor used).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from serving_models import trained_digits_model
from torch import nn

from flower_suite.coding.berrut import berrut_decode, berrut_encode
from flower_suite.coding.laplace import LaplaceMechanism
from flower_suite.data import ArrayDataset
from flower_suite.serving import (
    CodedPredictor,
    InjectionPlan,
    InsufficientResultsError,
    ReplicationPredictor,
    UncodedPredictor,
    WorkerBehaviour,
    WorkerPool,
)

SHAPE = (1, 8, 8)
SLOW = WorkerBehaviour(delay_s=5.0)


@dataclass
class Served:
    model: nn.Module
    pool: WorkerPool
    test: ArrayDataset

    def local(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.model(torch.from_numpy(np.asarray(x, dtype=np.float32))).double().numpy()


@pytest.fixture(scope="module")
def served(ray_runtime: None) -> Iterator[Served]:
    model, test = trained_digits_model()
    pool = WorkerPool(model, 4)
    pool.wait_ready(timeout_s=120)
    yield Served(model, pool, test)
    pool.shutdown()


def reference_outputs(
    served: Served, batch: np.ndarray, n: int, used: tuple[int, ...]
) -> np.ndarray:
    coded = berrut_encode(batch, n).astype(np.float32)
    results = served.local(coded)[list(used)]
    return berrut_decode(results, used, batch.shape[0], n)


def test_coded_outputs_equal_the_local_reference_and_stay_accurate(served: Served) -> None:
    # Prepare
    predictor = CodedPredictor(served.pool, SHAPE, num_queries=3, max_stragglers=1)
    x, y = served.test.x[:120], served.test.y[:120]
    # Execute
    result = predictor.predict(x)
    # Assert
    assert predictor.num_workers == 4 and all(len(b.used) == 3 for b in result.batches)
    for start, batch in zip(range(0, 120, 3), result.batches, strict=True):
        expected = reference_outputs(served, x[start : start + 3], 4, batch.used)
        assert np.allclose(batch.outputs, expected, atol=1e-4)
    base = float((served.local(x).argmax(1) == y).mean())
    assert base >= 0.9
    # N = K + S is a coarse approximation (the paper loses 10-25 points, spec §9.1), and which
    # worker straggles matters: 0.67-0.98 over these 120 images depending on the one dropped.
    assert float((result.predictions == y).mean()) >= 0.6


def test_incomplete_final_batch_is_padded(served: Served) -> None:
    predictor = CodedPredictor(served.pool, SHAPE, num_queries=3, max_stragglers=1)
    result = predictor.predict(served.test.x[:4])
    assert result.predictions.shape == (4,) and len(result.batches) == 2
    padded = np.concatenate([served.test.x[3:4]] * 3)
    expected = reference_outputs(served, padded, 4, result.batches[1].used)
    assert np.allclose(result.outputs[3:4], expected[:1], atol=1e-4)
    with pytest.raises(ValueError, match="K=3 queries, not 2"):
        predictor.predict_batch(served.test.x[:2])


def test_a_straggler_does_not_delay_the_batch(served: Served) -> None:
    predictor = CodedPredictor(served.pool, SHAPE, num_queries=3, max_stragglers=1)
    plan = InjectionPlan(fixed={2: SLOW})
    begin = time.perf_counter()
    result = predictor.predict(served.test.x[:6], plan)
    assert time.perf_counter() - begin < 3.0
    assert all(b.stragglers == (2,) and 2 not in b.used for b in result.batches)


def test_timeout_turns_missing_answers_into_stragglers(served: Served) -> None:
    # Waits for all N = 4 answers, but the deadline makes do with the 3 decoding needs.
    predictor = CodedPredictor(
        served.pool, SHAPE, num_queries=3, max_stragglers=1, wait_for=4, timeout_s=2.0
    )
    begin = time.perf_counter()
    outcome = predictor.predict(served.test.x[:3], InjectionPlan(fixed={0: SLOW})).batches[0]
    assert 2.0 <= time.perf_counter() - begin < 4.5
    assert outcome.stragglers == (0,) and outcome.used == (1, 2, 3)


def test_too_few_answers_is_an_error_not_a_guess(served: Served) -> None:
    predictor = CodedPredictor(served.pool, SHAPE, num_queries=3, max_stragglers=1, timeout_s=2.0)
    with pytest.raises(InsufficientResultsError, match=r"usable answers of N=4 within 2\.0 s"):
        predictor.predict(served.test.x[:3], InjectionPlan(fixed={0: SLOW, 3: SLOW}))


@pytest.mark.parametrize("kind", ["nan", "wrong_shape"])
def test_malformed_answers_count_as_stragglers(served: Served, kind: str) -> None:
    # Wait for all four answers, so the malformed one arrives and is screened out.
    predictor = CodedPredictor(served.pool, SHAPE, num_queries=3, max_stragglers=1, wait_for=4)
    plan = InjectionPlan(fixed={1: WorkerBehaviour(byzantine=kind)})
    result = predictor.predict(served.test.x[:6], plan)
    for start, batch in zip((0, 3), result.batches, strict=True):
        assert 1 in batch.failed and batch.used == (0, 2, 3)
        expected = reference_outputs(served, served.test.x[start : start + 3], 4, batch.used)
        assert np.allclose(batch.outputs, expected, atol=1e-4)


def test_byzantine_worker_is_located_and_dropped(served: Served) -> None:
    # K = 1, E = 1, S = 1: N = 2(K+E) - 1 + S = 4, the first 3 answers decoded.
    predictor = CodedPredictor(served.pool, SHAPE, num_queries=1, max_stragglers=1, max_byzantine=1)
    liar = WorkerBehaviour(byzantine="gaussian", sigma=100.0)
    x = served.test.x[:10]
    result = predictor.predict(x, InjectionPlan(fixed={3: liar, 0: SLOW}))
    assert predictor.num_workers == 4
    assert result.flagged == [(3,)] * 10
    for start, batch in zip(range(10), result.batches, strict=True):
        assert batch.used == (1, 2)
        expected = reference_outputs(served, x[start : start + 1], 4, batch.used)
        assert np.allclose(batch.outputs, expected, atol=1e-3)


@pytest.mark.parametrize("where", ["worker", "master"])
def test_laplace_option_adds_noise_of_the_declared_scale(served: Served, where: str) -> None:
    dp = LaplaceMechanism(epsilon=2.0, l1_sensitivity=2.0, where=where)
    clean = CodedPredictor(served.pool, SHAPE, 3, 1, decode_space="probs")
    noisy = CodedPredictor(served.pool, SHAPE, 3, 1, decode_space="probs", dp=dp, seed=3)
    x = served.test.x[:16]
    diff = noisy.predict(x).outputs - clean.predict(x).outputs
    assert np.all(np.isfinite(diff)) and np.abs(diff).mean() > 0.1


@pytest.mark.parametrize(
    ("kwargs", "queries", "message"),
    [
        ({}, np.zeros((4, 1, 28, 28), np.float32), "shape"),
        ({}, np.full((4, 1, 8, 8), np.nan, np.float32), "NaN"),
        ({}, np.zeros((0, 1, 8, 8), np.float32), "empty"),
        ({}, np.array([["a"]]), "numeric"),
        ({"num_queries": 0}, None, "K"),
        ({"num_queries": 4, "num_workers": 9}, None, "pool has 4 workers"),
        ({"num_queries": 4, "num_workers": 3}, None, "N"),
        ({"num_queries": 4, "max_stragglers": 1, "wait_for": 3}, None, "wait_for"),
        ({"num_queries": 4, "max_byzantine": 2, "num_workers": 5}, None, "need N >= 11"),
        ({"num_queries": 4, "timeout_s": 0.0}, None, "timeout_s"),
        ({"num_queries": 4, "decode_space": "softmax"}, None, "decode_space"),
    ],
)
def test_bad_requests_get_a_clear_error(
    served: Served, kwargs: dict[str, object], queries: np.ndarray | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        predictor = CodedPredictor(served.pool, SHAPE, **{"num_queries": 4, **kwargs})  # type: ignore[arg-type]
        predictor.predict(queries)


def test_model_rejecting_the_input_shape_is_a_clear_error(served: Served) -> None:
    with pytest.raises(ValueError, match="does not accept inputs of shape"):
        CodedPredictor(served.pool, (3, 8, 8), 4)


def test_pool_recovers_from_a_killed_worker(served: Served) -> None:
    predictor = CodedPredictor(served.pool, SHAPE, num_queries=3, max_stragglers=1, wait_for=4)
    served.pool.kill(2)
    first = predictor.predict(served.test.x[:3]).batches[0]
    assert "actor died" in first.failed[2] and first.used == (0, 1, 3)
    served.pool.wait_ready(timeout_s=120)
    again = predictor.predict(served.test.x[:3]).batches[0]
    assert again.failed == {} and again.used == (0, 1, 2, 3)
    assert served.pool.replacements_left == 99


def test_uncoded_and_replication_baselines(served: Served) -> None:
    # Prepare
    x = served.test.x[:6]
    exact = served.local(x).argmax(1)
    uncoded = UncodedPredictor(served.pool, SHAPE, num_queries=3)
    replicated = ReplicationPredictor(served.pool, SHAPE, num_queries=3, num_workers=4)
    slow = InjectionPlan(fixed={1: WorkerBehaviour(delay_s=1.0)})
    # Execute
    plain = uncoded.predict(x)
    delayed = uncoded.predict(x, slow)
    begin = time.perf_counter()
    copies = replicated.predict(x, slow)
    replicated_s = time.perf_counter() - begin
    # Assert: exact answers; one straggler delays uncoded serving, not replication
    assert np.array_equal(plain.predictions, exact) and np.array_equal(copies.predictions, exact)
    assert delayed.latencies_s.min() >= 1.0
    assert replicated_s < 1.5


def test_too_few_workers_alive_is_a_clear_error(served: Served) -> None:
    """Last in the module: it leaves two of the pool's workers dead."""
    served.pool.replacements_left = 0
    predictor = CodedPredictor(served.pool, SHAPE, num_queries=3, max_stragglers=1)
    served.pool.kill(0)
    served.pool.kill(1)
    with pytest.raises(InsufficientResultsError, match="only 2 usable answers"):
        predictor.predict(served.test.x[:3])
    with pytest.raises(ValueError, match="too few workers alive: 2 of N=4"):
        predictor.predict(served.test.x[:3])
