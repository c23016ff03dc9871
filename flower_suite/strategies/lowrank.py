"""PUFFERFISH warm-up in federated training: full-rank rounds, then factors only.

``LowRankWarmup`` wraps any strategy (FedAvg, FedProx, a robust rule, ...). Rounds
``1..warmup_rounds`` train the full-rank model. At the start of round ``warmup_rounds + 1``
the server factorizes the global model once (truncated SVD, ``U Σ^{1/2}``, ``Σ^{1/2} Vᵀ``;
dissertation Algorithm 2, spec ``pufferfish.md`` sections 5 and 12) and from then on every
instruction carries the :class:`~flower_suite.models.lowrank_spec.LowRankSpec` in its config,
so clients rebuild the hybrid architecture and only the factors travel.

Averaging ``U`` and ``V`` separately is a heuristic, not the average of ``U Vᵀ`` (spec section
12): with one local step per round it is the dissertation's data-parallel update, with several
it is not. BatchNorm statistics are averaged like parameters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from logging import INFO
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from torch import nn

from flower_suite.models.lowrank_spec import LowRankSpec
from flower_suite.strategies.contract import Capabilities, capabilities_of

ModelFactory = Callable[[], nn.Module]


def _same_layout(arrays: ArrayRecord, model: nn.Module) -> bool:
    state = model.state_dict()
    return list(arrays.keys()) == list(state.keys()) and all(
        tuple(arrays[k].shape) == tuple(state[k].shape) for k in state
    )


class LowRankWarmup(Strategy):
    """Run ``strategy`` full-rank for ``warmup_rounds`` rounds, then on factorized models.

    Parameters
    ----------
    strategy:
        The wrapped strategy; it samples, configures and aggregates as usual (it only sees
        different arrays after the switch). Attribute reads fall through to it, so
        ``wrapper.records`` is the robust strategy's record.
    spec:
        The factorization (rank ratio, layers kept full-rank).
    model_fn:
        Builds the full-rank architecture (weights are replaced by the global arrays).
    warmup_rounds:
        ``E_wu`` mapped to rounds (spec section 12); ``0`` factorizes the initial model
        before round 1 (the "low-rank from the start" ablation uses random factors instead).
    lr_factor:
        Multiplies the round config's ``"lr"`` after the switch (the dissertation halves the
        LSTM's learning rate there, spec section 5). A factor pair ``V U`` moves its product
        by about ``ΔV U + V ΔU``, a larger step than the dense layer takes at the same rate;
        on digits with lr 0.1 and momentum 0.9 the factorized model diverges without 0.5
        (benchmarks/RESULTS.md).
    """

    def __init__(
        self,
        strategy: Strategy,
        spec: LowRankSpec,
        model_fn: ModelFactory,
        warmup_rounds: int = 1,
        lr_factor: float = 1.0,
    ) -> None:
        if not isinstance(warmup_rounds, int) or warmup_rounds < 0:
            raise ValueError(f"warmup_rounds must be an integer >= 0, not {warmup_rounds!r}")
        self.strategy = strategy
        self.spec = spec
        self.model_fn = model_fn
        if not lr_factor > 0:
            raise ValueError(f"lr_factor must be > 0, not {lr_factor!r}")
        self.warmup_rounds = warmup_rounds
        self.lr_factor = float(lr_factor)
        self.switch_round: int | None = None  # the round whose instructions first had factors
        self._full = model_fn()
        self._lowrank = spec.apply(self._full, svd_init=False)

    @property
    def capabilities(self) -> Capabilities:
        """The wrapped strategy's, plus: the global model's architecture changes."""
        return dataclasses.replace(capabilities_of(self.strategy), changes_architecture=True)

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes this wrapper lacks: hooks read e.g. `records`.
        if name == "strategy":
            raise AttributeError(name)
        return getattr(self.strategy, name)

    # -- architecture -----------------------------------------------------------------------

    def is_lowrank(self, arrays: ArrayRecord) -> bool:
        """Whether ``arrays`` have the factorized layout."""
        return _same_layout(arrays, self._lowrank)

    def factorize_arrays(self, arrays: ArrayRecord) -> ArrayRecord:
        """The truncated-SVD factors of full-rank ``arrays`` (every other tensor copied)."""
        if not _same_layout(arrays, self._full):
            raise ValueError("LowRankWarmup: the global arrays fit neither the full-rank model")
        self._full.load_state_dict(arrays.to_torch_state_dict())
        return ArrayRecord(self.spec.apply(self._full).state_dict())

    def model_for_arrays(self, arrays: ArrayRecord) -> nn.Module:
        """A model of the architecture ``arrays`` describe (full-rank or factorized)."""
        model = self.model_fn()
        if self.is_lowrank(arrays):
            model = self.spec.apply(model, svd_init=False)
        model.load_state_dict(arrays.to_torch_state_dict())
        return model

    def _phase(self, server_round: int, arrays: ArrayRecord) -> tuple[ArrayRecord, bool]:
        if server_round <= self.warmup_rounds:
            return arrays, False
        if not self.is_lowrank(arrays):
            # The switch (also after a round that produced no aggregate, when the global
            # model is still the full-rank one).
            arrays = self.factorize_arrays(arrays)
            if self.switch_round is None:
                self.switch_round = server_round
                log(
                    INFO,
                    "LowRankWarmup: round %d switches to rank ratio %s",
                    server_round,
                    self.spec.rank_ratio,
                )
        return arrays, True

    def _tagged(self, config: ConfigRecord, train: bool) -> ConfigRecord:
        tagged = {**dict(config), **self.spec.to_config()}
        if train and "lr" in tagged and self.lr_factor != 1.0:
            tagged["lr"] = float(tagged["lr"]) * self.lr_factor
        return ConfigRecord(tagged)

    # -- Strategy interface -----------------------------------------------------------------

    def summary(self) -> None:
        log(
            INFO,
            "\t├── PUFFERFISH warm-up: %d full-rank rounds, then rank ratio %s, lr x %s (kept: %s)",
            self.warmup_rounds,
            self.spec.rank_ratio,
            self.lr_factor,
            ", ".join(self.spec.keep_full_rank) or "first conv, last linear",
        )
        self.strategy.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        arrays, lowrank = self._phase(server_round, arrays)
        if lowrank:
            config = self._tagged(config, train=True)
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.strategy.aggregate_train(server_round, replies)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.is_lowrank(arrays):
            config = self._tagged(config, train=False)
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)
