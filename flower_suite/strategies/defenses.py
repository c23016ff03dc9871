"""Clipping and noise defenses (issue 4): thin Message-API classes over
:mod:`flower_suite.defenses`.

- :class:`NormClipping` (NDC; Sun et al., 2019) and :class:`WeakDP` clip every update and then
  run *any* rule of :data:`flower_suite.aggregation.AGGREGATORS` (``aggregation="krum"`` gives
  "NDC + Krum"); WeakDP adds Gaussian noise to the aggregate.
- :class:`CRFL` (Xie et al., 2021): clip the new global model's norm and add parameter noise.
- :class:`FLAME` and :class:`FoolsGold` live in :mod:`.similarity_defenses` (re-exported).

Each takes FedAvg's arguments in FedAvg's order, then keyword-only parameters of its own,
keeps FedAvg's round structure (:class:`RobustFedAvg`), records per-round diagnostics in
``records[round].info`` (floats) and owns one seeded ``torch.Generator``, so a run with a fixed
``seed`` repeats bitwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from flower_suite.aggregation.base import AggregationResult
from flower_suite.defenses.clipping import check_positive, norm_clipping
from flower_suite.defenses.noise import crfl, make_generator, weak_dp
from flower_suite.strategies.defense_base import (
    BATCHNORM_BUFFERS,
    ComposedDefense,
    DefenseBase,
    inner_min_replies,
)
from flower_suite.strategies.robust import DEFAULT_WEIGHT_CAP, MetricsAggr
from flower_suite.strategies.similarity_defenses import FLAME, FoolsGold

__all__ = [
    "BATCHNORM_BUFFERS",
    "CRFL",
    "FLAME",
    "ComposedDefense",
    "DefenseBase",
    "FoolsGold",
    "NormClipping",
    "WeakDP",
    "inner_min_replies",
]


class NormClipping(ComposedDefense):
    """Norm-difference clipping (NDC): ``x_i <- x_i / max(1, ||x_i|| / max_norm)`` for every
    update, then ``aggregation`` (default FedAvg's weighted mean).

    Parameters (after FedAvg's)
    ---------------------------
    max_norm : float, default 2.0
        Clipping bound ``M`` (the dissertation: 2 for CIFAR-10/EMNIST, 1.5 for Sentiment140;
        calibrate to the median honest update norm for new models).
    aggregation : str, default "mean"
        Any rule of ``flower_suite.aggregation.AGGREGATORS`` (``krum``, ``multi_krum``,
        ``median``, ``trimmed_mean``, ``geometric_median``, ...).
    aggregation_kwargs : dict, optional
        That rule's parameters, e.g. ``{"num_malicious_nodes": 1}``.

    ``records[round].info``: ``fraction-clipped``, ``median-norm``, ``max-input-norm``.
    """

    rule_name = "NormClipping"

    def __init__(
        self,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
        weighted_by_key: str = "num-examples",
        arrayrecord_key: str = "arrays",
        configrecord_key: str = "config",
        train_metrics_aggr_fn: MetricsAggr | None = None,
        evaluate_metrics_aggr_fn: MetricsAggr | None = None,
        *,
        max_norm: float = 2.0,
        aggregation: str = "mean",
        aggregation_kwargs: Mapping[str, Any] | None = None,
        weight_cap: float | None = DEFAULT_WEIGHT_CAP,
    ) -> None:
        super().__init__(
            fraction_train,
            fraction_evaluate,
            min_train_nodes,
            min_evaluate_nodes,
            min_available_nodes,
            weighted_by_key,
            arrayrecord_key,
            configrecord_key,
            train_metrics_aggr_fn,
            evaluate_metrics_aggr_fn,
            weight_cap=weight_cap,
        )
        self._bind_aggregation(aggregation, aggregation_kwargs)
        check_positive(max_norm, name="max_norm", rule=self.rule_name)
        self.max_norm = max_norm

    def settings(self) -> dict[str, object]:
        return {"max_norm": self.max_norm, **super().settings()}

    def rule(
        self, updates: torch.Tensor, weights: torch.Tensor, node_ids: Sequence[int]
    ) -> AggregationResult:
        return norm_clipping(updates, weights, max_norm=self.max_norm, aggregation=self._inner)


class WeakDP(NormClipping):
    """Weak differential privacy: NDC, ``aggregation``, then ``N(0, noise_std^2 I)`` added once
    to the aggregate (the new global model).

    Parameters (after NormClipping's)
    ---------------------------------
    noise_std : float, default 0.005
        ``sigma`` (the dissertation: 0.005 for CIFAR-10, 0.001 and 0.002 for EMNIST).
    seed : int or None, default 0
        Seeds the noise generator, created once and advanced every round (None: OS entropy).

    ``records[round].info`` adds ``noise-std``.
    """

    rule_name = "WeakDP"

    def __init__(
        self,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
        weighted_by_key: str = "num-examples",
        arrayrecord_key: str = "arrays",
        configrecord_key: str = "config",
        train_metrics_aggr_fn: MetricsAggr | None = None,
        evaluate_metrics_aggr_fn: MetricsAggr | None = None,
        *,
        max_norm: float = 2.0,
        noise_std: float = 0.005,
        seed: int | None = 0,
        aggregation: str = "mean",
        aggregation_kwargs: Mapping[str, Any] | None = None,
        weight_cap: float | None = DEFAULT_WEIGHT_CAP,
    ) -> None:
        super().__init__(
            fraction_train,
            fraction_evaluate,
            min_train_nodes,
            min_evaluate_nodes,
            min_available_nodes,
            weighted_by_key,
            arrayrecord_key,
            configrecord_key,
            train_metrics_aggr_fn,
            evaluate_metrics_aggr_fn,
            max_norm=max_norm,
            aggregation=aggregation,
            aggregation_kwargs=aggregation_kwargs,
            weight_cap=weight_cap,
        )
        check_positive(noise_std, name="noise_std", rule=self.rule_name, allow_zero=True)
        self.noise_std, self.seed = noise_std, seed
        self.generator = make_generator(seed)

    def settings(self) -> dict[str, object]:
        return {"noise_std": self.noise_std, "seed": self.seed, **super().settings()}

    def rule(
        self, updates: torch.Tensor, weights: torch.Tensor, node_ids: Sequence[int]
    ) -> AggregationResult:
        return weak_dp(
            updates,
            weights,
            max_norm=self.max_norm,
            noise_std=self.noise_std,
            generator=self.generator,
            aggregation=self._inner,
        )


class CRFL(ComposedDefense):
    """CRFL training: ``w' = w + aggregation(updates)``, then the new global model is
    ``w' / max(1, ||w'|| / rho) + N(0, sigma^2 I)``. The norm and noise cover floating-point
    arrays only (integer buffers such as ``num_batches_tracked`` are left alone). CRFL's
    test-time parameter smoothing / certification is not part of the strategy.

    Parameters (after FedAvg's)
    ---------------------------
    rho : float
        Bound on the global model's L2 norm (required: it depends entirely on the model;
        choose it near the norm of a well-trained global model).
    sigma : float, default 0.01
        Std of the parameter noise added to the global model every round.
    seed : int or None, default 0
        Seeds the noise generator (created once, advanced every round).
    aggregation, aggregation_kwargs
        The rule producing the aggregate update, as for :class:`NormClipping`.

    ``records[round].info``: ``model-norm`` (before clipping), ``model-clipped``, ``noise-std``.
    """

    rule_name = "CRFL"

    def __init__(
        self,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
        weighted_by_key: str = "num-examples",
        arrayrecord_key: str = "arrays",
        configrecord_key: str = "config",
        train_metrics_aggr_fn: MetricsAggr | None = None,
        evaluate_metrics_aggr_fn: MetricsAggr | None = None,
        *,
        rho: float,
        sigma: float = 0.01,
        seed: int | None = 0,
        aggregation: str = "mean",
        aggregation_kwargs: Mapping[str, Any] | None = None,
        weight_cap: float | None = DEFAULT_WEIGHT_CAP,
    ) -> None:
        super().__init__(
            fraction_train,
            fraction_evaluate,
            min_train_nodes,
            min_evaluate_nodes,
            min_available_nodes,
            weighted_by_key,
            arrayrecord_key,
            configrecord_key,
            train_metrics_aggr_fn,
            evaluate_metrics_aggr_fn,
            weight_cap=weight_cap,
        )
        self._bind_aggregation(aggregation, aggregation_kwargs)
        check_positive(rho, name="rho", rule=self.rule_name)
        check_positive(sigma, name="sigma", rule=self.rule_name, allow_zero=True)
        self.rho, self.sigma, self.seed = rho, sigma, seed
        self.generator = make_generator(seed)

    def settings(self) -> dict[str, object]:
        return {"rho": self.rho, "sigma": self.sigma, "seed": self.seed, **super().settings()}

    def rule(
        self, updates: torch.Tensor, weights: torch.Tensor, node_ids: Sequence[int]
    ) -> AggregationResult:
        if self._global_flat is None:
            raise RuntimeError("CRFL: rule called outside robust_step (no global model)")
        return crfl(
            updates,
            weights,
            global_params=torch.from_numpy(self._global_flat),
            rho=self.rho,
            sigma=self.sigma,
            generator=self.generator,
            param_mask=self._column_mask(()),
            aggregation=self._inner,
        )
