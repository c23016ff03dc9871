"""FedMA: Federated Matched Averaging with communication (Wang et al., ICLR 2020).

Dissertation chapter 5; implementation spec ``shared/spec/fedma.md``. The maths is
framework-free in :mod:`flower_suite.matching`; this module is the Flower transport: a state
machine over communication rounds (spec §9) plus a :meth:`FedMA.start` whose round is one full
layer-wise pass ("FedMA with communication", §6).

Round structure for a model with ``N`` matchable layers (N = 4 for DigitsCNN), every exchange
one ``grid.send_and_receive`` of ``train.fedma`` messages to the same clients:

========  =============================================  ======================================
step      instruction (server -> client j)               reply (client j -> server)
========  =============================================  ======================================
0         round 1: config only (own seeded init) or the   layer 0 after E local epochs, class
          initial model; round r >= 2: client j's model   counts, ``num-examples``
          reconstructed to its original size (§6)
n=1..N-1  global layer n-1 + client j's assignment        layer n after retraining layers
          (int64 array) in one ArrayRecord                n..N-1 with layers 0..n-1 frozen
========  =============================================  ======================================

After step ``N-1`` the server averages the output layer with per-class weights (§5, step 3)
and the global model is complete; ``evaluate.fedma`` messages then evaluate it on clients (if
``fraction_evaluate > 0``) and ``evaluate_fn(round, arrays)`` on the server. So a FedMA round
costs exactly ``N`` communication rounds (spec §12, check 8).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from logging import INFO, WARNING
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy
from torch import nn

from flower_suite.flower_compat import (
    aggregate_metricrecords,
    log_strategy_start_info,
)
from flower_suite.matching.architecture import matchable_layers, model_for_state, state_shapes
from flower_suite.strategies.contract import (
    Capabilities,
    ExperimentSizes,
    check_min_replies,
)
from flower_suite.strategies.fedma_records import FedMARecords
from flower_suite.strategies.fedma_state import FedMAConfig, FedMAPass, check_initial_arrays, sample
from flower_suite.strategies.round_loop import run_rounds
from flower_suite.wire.keys import FEDMA_EVALUATE

__all__ = ["FedMA"]

ModelFactory = Callable[[], nn.Module]
MetricsAggrFn = Callable[[list[RecordDict], str], MetricRecord]


class FedMA(Strategy):
    """Federated Matched Averaging with communication (spec ``fedma.md`` §5-§9).

    Parameters
    ----------
    model_fn:
        Zero-argument factory of the clients' (original-size) model, or such a model; it
        fixes the matchable layers (Linear, Conv2d, Embedding, single-layer LSTM; no
        BatchNorm, spec §2) and rebuilds grown global models (:meth:`model_for_arrays`).
    fraction_train, min_train_nodes, min_available_nodes:
        Client sampling as in Flower's FedAvg (default 1.0, 2, 2). The paper samples every
        client every round (§9); a pass keeps its clients for all ``N`` steps, and a client
        new to a round starts from the most popular global units (:func:`popular_assignment`).
    fraction_evaluate, min_evaluate_nodes:
        Federated evaluation of the (grown) global model after each round with
        ``evaluate.fedma`` messages (default 1.0, 2; 0.0 disables it).
    weighted_by_key, train_metrics_aggr_fn, evaluate_metrics_aggr_fn:
        As in FedAvg (``"num-examples"``, Flower's weighted mean of metric records).
    gamma0, sigma0_sq, sigma_sq:
        BBP-MAP new-unit rate and prior / client variances (§4; defaults 7, 1, 1 as for
        VGG-9; variances, not standard deviations).
    iterations:
        Remove-and-rematch sweeps per layer (default 5, §4).
    max_width_ratio:
        Cap each hidden layer at ``ceil(ratio * widest client)`` units (default None: the
        §8 default ``min(max_units, 2 * widest)``).
    max_units:
        Absolute cap per layer (default 700, the reference code's value, §4).
    popularity_weight, aggregation:
        ``rho`` of the popularity term (default 1) and ``"mean"`` or ``"posterior"`` (§13).
    retrain_epochs:
        Epochs of freeze-and-retrain per step (default None: the config's ``local-epochs``).
    last_layer_lr_scale, last_layer_epochs_scale:
        When only the output layer trains (step ``N-1``): lr multiplier and epoch multiplier
        (default 1 and 1; the dissertation's VGG-9 used 0.1 and 3, §5).
    shared_init:
        Round 1 sends ``initial_arrays`` to every client (default False: each client starts
        from its own seeded initialisation, as in the dissertation, and nothing is sent).
    seed:
        Seeds the matching order of layer ``n`` in round ``r`` (§13, determinism).

    Attributes
    ----------
    width_history, growth_history, matching_time, bytes_history:
        FedMA round -> hidden-layer widths, growth of the global model over ``model_fn()``,
        seconds spent matching each hidden layer, and ``{"sent": ..., "received": ...}``
        ArrayRecord bytes of the training exchanges (:class:`FedMARecords`, spec §7-§8).
    """

    # Layer-wise train.fedma rounds of its own; the global model grows.
    capabilities = Capabilities(own_round_structure=True, changes_architecture=True)

    def __init__(
        self,
        *,
        model_fn: ModelFactory | nn.Module,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
        weighted_by_key: str = "num-examples",
        train_metrics_aggr_fn: MetricsAggrFn | None = None,
        evaluate_metrics_aggr_fn: MetricsAggrFn | None = None,
        gamma0: float = 7.0,
        sigma0_sq: float = 1.0,
        sigma_sq: float = 1.0,
        iterations: int = 5,
        max_width_ratio: float | None = None,
        max_units: int = 700,
        popularity_weight: float = 1.0,
        aggregation: str = "mean",
        retrain_epochs: int | None = None,
        last_layer_lr_scale: float = 1.0,
        last_layer_epochs_scale: int = 1,
        shared_init: bool = False,
        seed: int = 0,
    ) -> None:
        if not 0.0 < fraction_train <= 1.0:
            raise ValueError(f"fraction_train must be in (0, 1], not {fraction_train}")
        if not 0.0 <= fraction_evaluate <= 1.0:
            raise ValueError(f"fraction_evaluate must be in [0, 1], not {fraction_evaluate}")
        if min_train_nodes < 1 or min_available_nodes < 1:
            raise ValueError("FedMA needs min_train_nodes >= 1 and min_available_nodes >= 1")
        if min_available_nodes < min_train_nodes:
            raise ValueError(
                f"min_available_nodes={min_available_nodes} is below "
                f"min_train_nodes={min_train_nodes}"
            )
        self.model_fn: ModelFactory = (
            (lambda: model_fn) if isinstance(model_fn, nn.Module) else model_fn
        )
        template = self.model_fn()
        self.layers = matchable_layers(template)  # ValueError for BatchNorm & co.
        self.template_shapes = state_shapes(template.state_dict())
        self.fraction_train = fraction_train
        self.fraction_evaluate = fraction_evaluate
        self.min_train_nodes = min_train_nodes
        self.min_evaluate_nodes = min_evaluate_nodes if fraction_evaluate > 0 else 0
        self.min_available_nodes = min_available_nodes
        self.weighted_by_key = weighted_by_key
        self.train_metrics_aggr_fn = train_metrics_aggr_fn or aggregate_metricrecords
        self.evaluate_metrics_aggr_fn = evaluate_metrics_aggr_fn or aggregate_metricrecords
        self.config = FedMAConfig(
            gamma0=gamma0,
            sigma0_sq=sigma0_sq,
            sigma_sq=sigma_sq,
            iterations=iterations,
            max_width_ratio=max_width_ratio,
            max_units=max_units,
            popularity_weight=popularity_weight,
            aggregation=aggregation,
            retrain_epochs=retrain_epochs,
            last_layer_lr_scale=last_layer_lr_scale,
            last_layer_epochs_scale=last_layer_epochs_scale,
            shared_init=shared_init,
            seed=seed,
        )
        self.records = FedMARecords()
        # The documented names alias the records' dicts, which start() clears in place.
        self.width_history = self.records.widths
        self.growth_history = self.records.growth
        self.matching_time = self.records.matching_time
        self.bytes_history = self.records.bytes
        self._dtype = next(template.parameters()).detach().numpy().dtype
        self._pass = FedMAPass(self.layers, self.template_shapes, self.config, dtype=self._dtype)

    # ----------------------------------------------------------------------------------
    # Round bookkeeping (spec §9: Flower round t -> (FedMA round, layer step))
    # ----------------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        """Communication rounds per FedMA round: the number of matchable layers ``N``."""
        return len(self.layers)

    def locate(self, server_round: int) -> tuple[int, int]:
        """``(fedma_round, step)`` of communication round ``server_round`` (1-based)."""
        if server_round < 1:
            raise ValueError(f"server_round must be >= 1, not {server_round}")
        fedma_round, step = divmod(server_round - 1, self.num_steps)
        return fedma_round + 1, step

    def model_for_arrays(self, arrays: ArrayRecord | Mapping[str, Any]) -> nn.Module:
        """A model of ``model_fn``'s architecture that holds ``arrays`` (any grown widths)."""
        return model_for_state(self.model_fn, arrays)

    # ----------------------------------------------------------------------------------
    # Strategy interface
    # ----------------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Instructions for one step of the layer-wise pass (see the module docstring)."""
        fedma_round, step = self.locate(server_round)
        if step == 0:
            nodes = sample(
                grid, self.fraction_train, self.min_train_nodes, self.min_available_nodes
            )
            log(INFO, "configure_train: FedMA round %d, %d clients", fedma_round, len(nodes))
            self._pass.begin(fedma_round, nodes, arrays)
        messages = self._pass.instructions(server_round, step, config)
        self.records.count_bytes(fedma_round, "sent", (m.content for m in messages))
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Match layer ``step`` (or average the output layer and finish the global model)."""
        fedma_round, step = self.locate(server_round)
        replies = list(replies)
        valid = [m for m in replies if not m.has_error()]
        for msg in replies:
            if msg.has_error():
                log(
                    WARNING, "FedMA: node %d failed: %s", msg.metadata.src_node_id, msg.error.reason
                )
        self.records.count_bytes(fedma_round, "received", (m.content for m in valid))
        if len(valid) < self.min_train_nodes:
            log(
                WARNING,
                "FedMA round %d step %d: %d replies, fewer than min_train_nodes=%d; "
                "the pass is abandoned and the global model kept",
                fedma_round,
                step,
                len(valid),
                self.min_train_nodes,
            )
            self._pass.abandon()
            return None, None
        contents = self._pass.accept(step, valid)
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        if step < self.num_steps - 1:
            self._pass.match(step)
            return None, metrics
        arrays = self._pass.finish()
        self.records.record_pass(
            fedma_round,
            global_arrays=arrays,
            template_shapes=self.template_shapes,
            widths=self._pass.widths,
            seconds=self._pass.seconds,
            metrics=metrics,
        )
        return arrays, metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """``evaluate.fedma`` instructions carrying the global model (any width)."""
        if self.fraction_evaluate == 0.0:
            return []
        nodes = sample(
            grid, self.fraction_evaluate, self.min_evaluate_nodes, self.min_available_nodes
        )
        config = ConfigRecord({**dict(config), "server-round": server_round})
        return [
            Message(
                content=RecordDict({"arrays": arrays, "config": config}),
                message_type=FEDMA_EVALUATE,
                dst_node_id=node,
            )
            for node in nodes
        ]

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Weighted mean of the clients' evaluation metrics (as FedAvg)."""
        valid = [m.content for m in replies if not m.has_error()]
        if not valid:
            return None
        return self.evaluate_metrics_aggr_fn(valid, self.weighted_by_key)

    def min_replies(self) -> int:
        """A layer step needs ``min_train_nodes`` replies (else the pass is abandoned)."""
        return self.min_train_nodes

    def check_sizes(self, sizes: ExperimentSizes) -> None:
        check_min_replies("FedMA", self.min_replies(), sizes)

    def summary(self) -> None:
        """Log the configuration."""
        c = self.config
        log(
            INFO,
            "\t├── FedMA: %d matchable layers (%s)",
            self.num_steps,
            ", ".join(f"{s.kind} {s.weight}" for s in self.layers),
        )
        log(
            INFO,
            "\t├── Sampling: fraction_train=%s, min_train_nodes=%d, "
            "min_available_nodes=%d, fraction_evaluate=%s",
            self.fraction_train,
            self.min_train_nodes,
            self.min_available_nodes,
            self.fraction_evaluate,
        )
        log(
            INFO,
            "\t├── BBP-MAP: gamma0=%s, sigma0_sq=%s, sigma_sq=%s, iterations=%d, "
            "max_width_ratio=%s, max_units=%d, aggregation=%s",
            c.gamma0,
            c.sigma0_sq,
            c.sigma_sq,
            c.iterations,
            c.max_width_ratio,
            c.max_units,
            c.aggregation,
        )
        log(
            INFO,
            "\t└── Retraining: retrain_epochs=%s, last layer lr x%s epochs x%d, shared_init=%s",
            c.retrain_epochs,
            c.last_layer_lr_scale,
            c.last_layer_epochs_scale,
            c.shared_init,
        )

    # ----------------------------------------------------------------------------------
    # Driver: one round = one full layer-wise pass
    # ----------------------------------------------------------------------------------
    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
        should_stop: Callable[[int, Result], bool] | None = None,
    ) -> Result:
        """Run ``num_rounds`` FedMA rounds of ``N`` communication rounds each.

        Same signature and callbacks as Flower's ``Strategy.start``: ``evaluate_fn`` is called
        with round 0 and the initial arrays, then after every FedMA round with the (grown)
        global model; ``Result`` metrics are keyed by FedMA round; ``should_stop`` (Flower
        1.43's early stop) is asked after every FedMA round.
        """
        check_initial_arrays(initial_arrays, self.template_shapes)
        # A new run: forget assignments and histories of a previous start() call.
        self._pass = FedMAPass(self.layers, self.template_shapes, self.config, dtype=self._dtype)
        self.records.clear()
        log(INFO, "Starting FedMA strategy:")
        log_strategy_start_info(num_rounds, initial_arrays, train_config, evaluate_config)
        self.summary()
        train_config = ConfigRecord() if train_config is None else train_config

        def one_pass(fedma_round: int, arrays: ArrayRecord) -> tuple[Any, Any]:
            new_arrays, metrics = None, None
            for step in range(self.num_steps):
                server_round = (fedma_round - 1) * self.num_steps + step + 1
                messages = self.configure_train(server_round, arrays, train_config, grid)
                replies = grid.send_and_receive(messages, timeout=timeout) if messages else []
                new_arrays, metrics = self.aggregate_train(server_round, replies)
                if self._pass.abandoned:
                    return new_arrays, None
            return new_arrays, metrics

        return run_rounds(
            self,
            grid,
            initial_arrays,
            num_rounds,
            one_pass,
            timeout=timeout,
            evaluate_config=evaluate_config,
            evaluate_fn=evaluate_fn,
            should_stop=should_stop,
            label="FEDMA ROUND",
        )
