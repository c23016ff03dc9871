"""Coded prediction serving on Ray: ApproxIFER (Soleymani et al., AAAI 2022) and its baselines.

:class:`CodedPredictor` serves a trained torch model (e.g. ``model.pt`` of a Flower run) with a
pool of Ray actors: batches of ``K`` queries are Berrut-encoded for ``N`` workers and decoded
from the first ``N - S`` answers, with up to ``E`` Byzantine workers located and dropped
(``flower_suite.coding.berrut`` / ``approxifer_locator``). :class:`UncodedPredictor` and
:class:`ReplicationPredictor` are the latency baselines. ``python -m flower_suite.serving``
serves a saved model on a test set. Spec: ``shared/spec/approxifer.md``.
"""

from flower_suite.serving.baselines import (
    ReplicationPredictor,
    UncodedPredictor,
    replication_assignment,
)
from flower_suite.serving.behaviour import (
    BYZANTINE_KINDS,
    InjectionPlan,
    WorkerBehaviour,
    screen_output,
)
from flower_suite.serving.pool import Gathered, ModelWorker, WorkerPool, gather
from flower_suite.serving.predictor import (
    BatchOutcome,
    CodedPredictor,
    InsufficientResultsError,
    Prediction,
)

__all__ = [
    "BYZANTINE_KINDS",
    "BatchOutcome",
    "CodedPredictor",
    "Gathered",
    "InjectionPlan",
    "InsufficientResultsError",
    "ModelWorker",
    "Prediction",
    "ReplicationPredictor",
    "UncodedPredictor",
    "WorkerBehaviour",
    "WorkerPool",
    "gather",
    "replication_assignment",
    "screen_output",
]
