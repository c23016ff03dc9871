"""The round loop of Flower's ``Strategy.start`` with a pluggable training step.

Strategies whose training round is not one ``configure_train`` / ``send_and_receive`` /
``aggregate_train`` trip (FedMA: one pass of N layer steps; SecAggPlus: four protocol stages)
share everything else with Flower's loop: round-0 evaluation, federated evaluation after each
round, ``evaluate_fn`` and the ``Result`` bookkeeping. This is that loop, once.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from logging import INFO

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

TrainRound = Callable[[int, ArrayRecord], tuple[ArrayRecord | None, MetricRecord | None]]
EvaluateFn = Callable[[int, ArrayRecord], MetricRecord | None]


def run_rounds(
    strategy: Strategy,
    grid: Grid,
    initial_arrays: ArrayRecord,
    num_rounds: int,
    train_round: TrainRound,
    *,
    timeout: float = 3600,
    evaluate_config: ConfigRecord | None = None,
    evaluate_fn: EvaluateFn | None = None,
    should_stop: Callable[[int, Result], bool] | None = None,
    label: str = "ROUND",
) -> Result:
    """Run ``num_rounds`` rounds: ``train_round(round, arrays) -> (new arrays or None,
    metrics or None)``, then ``strategy``'s federated evaluation, then ``evaluate_fn``.

    A round whose training returns ``None`` arrays keeps the previous global model.
    ``should_stop(round, result)``, called after each round as in Flower 1.43's
    ``Strategy.start``, ends the run early when it returns True.
    """
    evaluate_config = ConfigRecord() if evaluate_config is None else evaluate_config
    result = Result(arrays=initial_arrays)
    t_start = time.time()
    if evaluate_fn:
        res = evaluate_fn(0, initial_arrays)
        if res is not None:
            result.evaluate_metrics_serverapp[0] = res
    arrays = initial_arrays
    for current_round in range(1, num_rounds + 1):
        log(INFO, "")
        log(INFO, "[%s %s/%s]", label, current_round, num_rounds)
        new_arrays, train_metrics = train_round(current_round, arrays)
        if new_arrays is not None:
            arrays = result.arrays = new_arrays
        if train_metrics is not None:
            result.train_metrics_clientapp[current_round] = train_metrics
        messages = list(strategy.configure_evaluate(current_round, arrays, evaluate_config, grid))
        if messages:
            replies = grid.send_and_receive(messages, timeout=timeout)
            evaluated = strategy.aggregate_evaluate(current_round, replies)
            if evaluated is not None:
                result.evaluate_metrics_clientapp[current_round] = evaluated
        if evaluate_fn:
            res = evaluate_fn(current_round, arrays)
            if res is not None:
                result.evaluate_metrics_serverapp[current_round] = res
        if should_stop is not None and should_stop(current_round, result):
            log(INFO, "Stopping early after round %s", current_round)
            break
    log(INFO, "%s finished in %.2fs", type(strategy).__name__, time.time() - t_start)
    for line in io.StringIO(str(result)):
        log(INFO, "\t%s", line.strip("\n"))
    return result


class RoundWrapper(Strategy):
    """A wrapper around ``self.strategy`` whose training round is its own ``train_round``
    (several round trips: SecAggPlus's protocol stages, SecureRobust's groups); evaluation,
    the record keys and the round loop are the wrapped strategy's and :func:`run_rounds`."""

    strategy: Strategy
    round_label = "ROUND"

    @property
    def arrayrecord_key(self) -> str:
        return str(getattr(self.strategy, "arrayrecord_key", "arrays"))

    @property
    def weighted_by_key(self) -> str:
        return str(getattr(self.strategy, "weighted_by_key", "num-examples"))

    def train_round(
        self,
        grid: Grid,
        server_round: int,
        arrays: ArrayRecord,
        config: ConfigRecord,
        timeout: float = 3600.0,
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        raise NotImplementedError

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        raise RuntimeError(
            f"{type(self).__name__} needs several round trips per round: call start() or "
            "train_round(), not configure_train/aggregate_train"
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        raise RuntimeError(
            f"{type(self).__name__} aggregates inside train_round(); see configure_train"
        )

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: EvaluateFn | None = None,
        should_stop: Callable[[int, Result], bool] | None = None,
    ) -> Result:
        log(INFO, "Starting %s(%s):", type(self).__name__, type(self.strategy).__name__)
        self.summary()
        train_config = ConfigRecord() if train_config is None else train_config
        return run_rounds(
            self,
            grid,
            initial_arrays,
            num_rounds,
            lambda rnd, arrays: self.train_round(grid, rnd, arrays, train_config, timeout),
            timeout=timeout,
            evaluate_config=evaluate_config,
            evaluate_fn=evaluate_fn,
            should_stop=should_stop,
            label=self.round_label,
        )
