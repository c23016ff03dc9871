"""The server side of an experiment, shared by the runner and the ``flwr run`` app.

``server_main`` builds the strategy from the config, wraps the Grid to meter bytes, runs
``strategy.start`` with the round hooks as ``evaluate_fn``, and records every round.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from flower_suite.data.partition import format_histograms
from flower_suite.flower_compat import aggregate_metricrecords
from flower_suite.registry import accepted_parameters
from flower_suite.simulations.config import ExperimentConfig
from flower_suite.simulations.config.secagg import GROUP_SIZE
from flower_suite.simulations.engine.attack_hooks import attack_metrics
from flower_suite.simulations.engine.hooks import DEFAULT_HOOKS, HookContext, HookFactory
from flower_suite.simulations.engine.metering import MeteredGrid
from flower_suite.simulations.engine.node_map import map_partitions
from flower_suite.simulations.engine.recording import RunRecorder
from flower_suite.simulations.engine.task import ExperimentTask, accepts
from flower_suite.simulations.threats import server_threat, train_config_extras
from flower_suite.strategies import STRATEGIES
from flower_suite.strategies.compressed import Compressed
from flower_suite.strategies.lowrank import LowRankWarmup
from flower_suite.strategies.secagg import SecAggPlus
from flower_suite.strategies.secure_robust import SecureRobust

RoundCallback = Callable[[Mapping[str, Any]], None]


@dataclass
class RunResult:
    """What a finished experiment returns."""

    config: ExperimentConfig
    rows: list[dict[str, Any]] = field(default_factory=list)
    final_arrays: ArrayRecord | None = None
    run_dir: Path | None = None  # when recorded
    wall_time_s: float = 0.0

    @property
    def final(self) -> dict[str, Any]:
        return self.rows[-1] if self.rows else {}


class _MetricsTap:
    """Aggregates client metrics like Flower does, and keeps the latest for the round row."""

    def __init__(self) -> None:
        self.pending: dict[str, float] = {}

    def aggregator(self, prefix: str) -> Callable[[list[RecordDict], str], MetricRecord]:
        def aggregate(records: list[RecordDict], weighting_key: str) -> MetricRecord:
            result = aggregate_metricrecords(records, weighting_key)
            # "train-loss" -> "train-loss", "eval-acc" -> "client-eval-acc", "x" -> "train-x"
            tail = prefix.rsplit("-", 1)[-1] + "-"
            for key, value in result.items():
                if key != weighting_key and isinstance(value, int | float):
                    self.pending[f"{prefix}-{key.removeprefix(tail)}"] = float(value)
            self.pending[f"{prefix}-clients"] = float(len(records))
            return result

        return aggregate

    def take(self) -> dict[str, float]:
        out, self.pending = self.pending, {}
        return out


def build_strategy(
    config: ExperimentConfig, tap: _MetricsTap | None = None, task: ExperimentTask | None = None
) -> Strategy:
    """The configured strategy, with sampling derived from clients_per_round, wrapped in the
    PUFFERFISH warm-up when ``[lowrank]`` is enabled."""
    factory = STRATEGIES.get(config.strategy.name)
    n, m, e = config.num_clients, config.sampled_clients, config.evaluate_clients
    derived: dict[str, Any] = {
        # min_train_nodes = m makes the sample exactly m despite float rounding of m / n.
        "fraction_train": m / n,
        "min_train_nodes": m,
        "min_available_nodes": n,
        "fraction_evaluate": e / n,
        "min_evaluate_nodes": e,
    }
    if tap is not None:
        derived["train_metrics_aggr_fn"] = tap.aggregator("train")
        derived["evaluate_metrics_aggr_fn"] = tap.aggregator("client-eval")
    kwargs = {k: v for k, v in derived.items() if accepts(factory, k)}
    kwargs.update(config.strategy.kwargs)
    task = task or ExperimentTask(config)
    if "model_fn" in accepted_parameters(factory):
        # Strategies that rebuild the architecture (FedMA) get the experiment's model.
        kwargs.setdefault("model_fn", task.build_model)
    strategy = factory(**kwargs)
    spec = task.lowrank_spec
    if spec is not None:
        strategy = LowRankWarmup(
            strategy,
            spec,
            model_fn=task.build_model,
            warmup_rounds=config.lowrank.warmup_rounds,
            lr_factor=config.lowrank.lr_factor,
        )
    if config.compression.enabled:
        # Decode compressed replies before any rule aggregates (dissertation ch. 3); the
        # config refuses [secagg] with it, and so does this, for configs built by hand.
        if config.secagg_enabled:
            raise ValueError(
                "compression.name: compressed updates cannot run under [secagg] (the server "
                "cannot decode a masked sum of codes)"
            )
        strategy = Compressed(strategy, config.compression.build())
    if config.secagg_enabled and GROUP_SIZE in config.secagg:
        # group-wise SecAgg+, the configured rule over the group means (seeded by the run)
        strategy = SecureRobust(strategy, seed=config.seed, **dict(config.secagg))
    elif config.secagg_enabled:
        # SecAggPlus(strategy, **[secagg]); a rule that inspects updates was refused earlier.
        strategy = SecAggPlus(strategy, **dict(config.secagg))
    return strategy


def train_config_record(
    config: ExperimentConfig, task: ExperimentTask | None = None
) -> ConfigRecord:
    """Client hyper-parameters as sent each round (kebab-case, as the ClientApp reads them);
    ``lr-decay`` only when decaying and attack keys (``n-s-estimate``) only when attacking,
    so other runs send exactly what they always sent."""
    c = config.client
    record: dict[str, Any] = {**c.train_config().to_wire(), "seed": config.seed}
    if c.lr_decay != 1.0:
        record["lr-decay"] = c.lr_decay
    if task is not None and config.attack.enabled:
        record.update(train_config_extras(task.threat_plan()))
    return ConfigRecord(record)


def server_main(
    grid: Grid,
    config: ExperimentConfig,
    *,
    hooks: Sequence[HookFactory] = DEFAULT_HOOKS,
    recorder: RunRecorder | None = None,
    on_round: RoundCallback | None = None,
    task: ExperimentTask | None = None,
) -> RunResult:
    """Run ``config.rounds`` rounds of the configured strategy on ``grid``."""
    random.seed(config.seed)  # Flower samples clients with the `random` module
    task = task or ExperimentTask(config)
    tap = _MetricsTap()
    strategy = build_strategy(config, tap, task)
    metered = MeteredGrid(grid)
    # Knowing each node's partition makes sampling and the order of aggregation (hence
    # floating-point sums) independent of the random simulation node ids and of Ray's
    # completion order: runs repeat bitwise. The engine knows it; on a deployment replies
    # report it, and sampling only part of the clients needs it before the first reply, so
    # then we ask once.
    partial = config.sampled_clients < config.num_clients or (
        0 < config.evaluate_clients < config.num_clients
    )
    map_partitions(metered, config.num_clients, ask=partial)
    # Attack runs: the strategy talks to an AttackGrid (forced participation, omniscient
    # injection, update norms) over the metered grid, and the attack hooks are added.
    plan = task.threat_plan()
    threat = None
    if plan is not None:
        threat = server_threat(plan, metered, metered.partitions, config)
    if threat is not None:
        hooks = [*hooks, attack_metrics]
    context = HookContext(task=task, strategy=strategy, grid=metered, threat=threat)
    round_hooks = [factory(context) for factory in hooks]
    result = RunResult(config=config)
    if recorder is not None:
        recorder.write_config(config.to_dict())
        recorder.write_partitions(format_histograms(task.label_histograms()))
        result.run_dir = recorder.run_dir

    start = time.perf_counter()

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        row: dict[str, Any] = {"round": server_round}
        for hook in round_hooks:
            row.update(hook(server_round, arrays))
        if threat is not None and "test-acc" in row:
            row["main-acc"] = row["test-acc"]  # the backdoor papers' name for it
        row.update(tap.take())
        row["elapsed-s"] = time.perf_counter() - start
        result.rows.append(row)
        if recorder is not None:
            recorder.log_round(row)
        if on_round is not None:
            on_round(row)
        return MetricRecord({k: v for k, v in row.items() if isinstance(v, int | float)})

    outcome = strategy.start(
        grid=threat.grid if threat is not None else metered,
        initial_arrays=ArrayRecord(task.build_model(seed=config.seed).state_dict()),
        num_rounds=config.rounds,
        train_config=train_config_record(config, task),
        evaluate_fn=evaluate_fn,
    )
    result.final_arrays = outcome.arrays
    result.wall_time_s = time.perf_counter() - start
    if recorder is not None:
        recorder.write_placements(metered.placements)
        model = context.model_for(outcome.arrays)
        recorder.finish(
            result.rows,
            model,
            {"name": config.name, "wall_time_s": result.wall_time_s, "final": result.final},
        )
    return result
