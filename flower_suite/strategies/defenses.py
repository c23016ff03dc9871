"""Backdoor-defense strategies (issue 4), thin Message-API classes over
:mod:`flower_suite.defenses`.

- :class:`NormClipping` (NDC; Sun et al., 2019) and :class:`WeakDP` clip every update and then
  run *any* rule of :data:`flower_suite.aggregation.AGGREGATORS` (``aggregation="krum"`` gives
  "NDC + Krum"); WeakDP adds Gaussian noise to the aggregate.
- :class:`FLAME` (Nguyen et al., 2022): HDBSCAN on cosine distances, median-norm clipping, noise.
- :class:`FoolsGold` (Fung et al., 2020): weights from the similarity of per-node histories.
- :class:`CRFL` (Xie et al., 2021): clip the new global model's norm and add parameter noise.

Each keeps FedAvg's constructor arguments and round structure (:class:`RobustFedAvg`), records
per-round diagnostics in ``records[round].info`` (floats) and owns one seeded
``torch.Generator``, so a run with a fixed ``seed`` repeats bitwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Message

from flower_suite.aggregation.base import AggregationResult
from flower_suite.aggregation.requirements import check_rule_params, min_inputs
from flower_suite.defenses.clipping import bind_rule, check_positive, norm_clipping
from flower_suite.defenses.flame import MIN_CLIENTS, flame
from flower_suite.defenses.foolsgold import (
    FoolsGoldHistory,
    apply_foolsgold_weights,
    foolsgold_weights,
)
from flower_suite.defenses.noise import crfl, make_generator, weak_dp
from flower_suite.strategies.decoding import ArrayLayout, DecodedReplies
from flower_suite.strategies.robust import RobustFedAvg

# Array-name suffixes left out of FLAME's clustering vector (BatchNorm statistics).
BATCHNORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def inner_min_replies(name: str, kwargs: Mapping[str, Any]) -> int:
    """Fewest updates the named ``AGGREGATORS`` rule accepts with ``kwargs``."""
    return min_inputs(name, kwargs) if isinstance(name, str) else 1


class _DefenseBase(RobustFedAvg):
    """Keeps the round's array layout and flat global model for rules that need them."""

    # Clipping norms, cosine similarities and histories are measured on true updates.
    needs_sent_model = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._layout: ArrayLayout | None = None
        self._global_flat: np.ndarray | None = None

    def robust_step(
        self, server_round: int, replies: Sequence[Message], global_arrays: ArrayRecord | None
    ) -> tuple[ArrayRecord | None, DecodedReplies | None]:
        if global_arrays is not None:
            self._layout = ArrayLayout.of(global_arrays)
            self._global_flat = self._layout.flatten(global_arrays)
        return super().robust_step(server_round, replies, global_arrays)

    def _column_mask(self, exclude_suffixes: Sequence[str]) -> torch.Tensor | None:
        """Boolean (d,) mask of floating arrays not named ``*<suffix>``; None if all pass."""
        if self._layout is None:
            return None
        mask = np.ones(self._layout.size, dtype=bool)
        for key, shape, dtype, offset in zip(
            self._layout.keys,
            self._layout.shapes,
            self._layout.dtypes,
            self._layout.offsets,
            strict=True,
        ):
            if not np.issubdtype(dtype, np.floating) or key.endswith(tuple(exclude_suffixes)):
                mask[offset : offset + int(np.prod(shape, dtype=np.int64))] = False
        return None if mask.all() else torch.from_numpy(mask)


class _ComposedDefense(_DefenseBase):
    """A defense that runs a named ``AGGREGATORS`` rule inside (NDC, weak DP, CRFL)."""

    def __init__(
        self,
        *args: Any,
        aggregation: str = "mean",
        aggregation_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.aggregation = aggregation
        self.aggregation_kwargs = dict(aggregation_kwargs or {})
        if isinstance(aggregation, str):
            check_rule_params(aggregation, self.aggregation_kwargs, owner=self.rule_name)
        self._inner = bind_rule(aggregation, self.aggregation_kwargs)  # checks name and kwargs

    def min_replies(self) -> int:
        return inner_min_replies(self.aggregation, self.aggregation_kwargs)

    def settings(self) -> dict[str, object]:
        return {"aggregation": self.aggregation, **self.aggregation_kwargs}


class NormClipping(_ComposedDefense):
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

    def __init__(self, *args: Any, max_norm: float = 2.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
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
        self, *args: Any, noise_std: float = 0.005, seed: int | None = 0, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
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


class FLAME(_DefenseBase):
    """FLAME: admit the majority HDBSCAN cluster of cosine distances between updates, clip the
    admitted updates to the median norm ``S`` of all updates, average, add
    ``N(0, (noise_lambda * S)^2 I)``. Needs at least 3 replies.

    Parameters (after FedAvg's)
    ---------------------------
    noise_lambda : float, default 0.001
        The paper's ``lambda`` (0.001 for image classification, 0.01 for NLP).
    min_cluster_size : int or None, default None
        HDBSCAN's ``min_cluster_size``; None means ``n // 2 + 1`` (the paper).
    weighted : bool, default False
        Weight the admitted average by ``num-examples`` (the paper averages uniformly).
    exclude_from_clustering : tuple of str
        Array-name suffixes left out of the clustering vector (default: BatchNorm statistics);
        integer arrays are always left out.
    seed : int or None, default 0
        Seeds the noise generator (created once, advanced every round).

    ``records[round]``: ``selected`` = admitted node ids; ``info``: ``admitted``, ``clusters``,
    ``median-norm``, ``fraction-clipped``, ``noise-std``.
    """

    rule_name = "FLAME"

    def __init__(
        self,
        *args: Any,
        noise_lambda: float = 0.001,
        min_cluster_size: int | None = None,
        weighted: bool = False,
        exclude_from_clustering: Sequence[str] = BATCHNORM_BUFFERS,
        seed: int | None = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        check_positive(noise_lambda, name="noise_lambda", rule=self.rule_name, allow_zero=True)
        if min_cluster_size is not None and (
            not isinstance(min_cluster_size, int) or min_cluster_size < 2
        ):
            raise ValueError(
                f"FLAME: min_cluster_size must be an integer >= 2 or None, not {min_cluster_size!r}"
            )
        self.noise_lambda = noise_lambda
        self.min_cluster_size = min_cluster_size
        self.weighted = weighted
        self.exclude_from_clustering = tuple(exclude_from_clustering)
        self.seed = seed
        self.generator = make_generator(seed)

    def min_replies(self) -> int:
        return max(MIN_CLIENTS, self.min_cluster_size or 0)

    def settings(self) -> dict[str, object]:
        return {
            "noise_lambda": self.noise_lambda,
            "min_cluster_size": self.min_cluster_size or "n//2+1",
            "weighted": self.weighted,
            "seed": self.seed,
        }

    def rule(
        self, updates: torch.Tensor, weights: torch.Tensor, node_ids: Sequence[int]
    ) -> AggregationResult:
        return flame(
            updates,
            weights,
            noise_lambda=self.noise_lambda,
            min_cluster_size=self.min_cluster_size,
            generator=self.generator,
            weighted=self.weighted,
            cluster_mask=self._column_mask(self.exclude_from_clustering),
        )


class FoolsGold(_DefenseBase):
    """FoolsGold: per-node summed update histories (keyed by node id, so partial participation
    and reply order never mix clients up), cosine similarity, pardoning, logit weighting; the
    round's update is ``sum_i alpha_i x_i / sum_i alpha_i``.

    Parameters (after FedAvg's)
    ---------------------------
    kappa : float, default 1.0
        The paper's logit confidence parameter.
    scope : "all" or "round", default "all"
        Compare each participant's history with every node's history seen so far ("all":
        sybils are caught even when they are not sampled together) or only with this round's
        participants ("round").

    ``records[round].info``: ``weight-<node id>`` for every participant, ``min-weight``,
    ``mean-weight``, ``zero-weight``; ``selected`` = participants with a weight > 0.
    """

    rule_name = "FoolsGold"

    def __init__(self, *args: Any, kappa: float = 1.0, scope: str = "all", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        check_positive(kappa, name="kappa", rule=self.rule_name)
        if scope not in ("all", "round"):
            raise ValueError(f"FoolsGold: scope must be 'all' or 'round', not {scope!r}")
        self.kappa, self.scope = kappa, scope
        self.history = FoolsGoldHistory()

    def settings(self) -> dict[str, object]:
        return {"kappa": self.kappa, "scope": self.scope}

    def rule(
        self, updates: torch.Tensor, weights: torch.Tensor, node_ids: Sequence[int]
    ) -> AggregationResult:
        self.history.update(node_ids, updates)  # the paper's history includes this round
        if self.scope == "round":
            alpha = foolsgold_weights(self.history.matrix(node_ids), kappa=self.kappa)
        else:
            everyone = self.history.node_ids
            alpha_all = foolsgold_weights(self.history.matrix(everyone), kappa=self.kappa)
            position = {node: i for i, node in enumerate(everyone)}
            alpha = alpha_all[[position[int(node)] for node in node_ids]]
        result = apply_foolsgold_weights(updates, alpha)
        per_node = {
            f"weight-{int(node)}": float(a) for node, a in zip(node_ids, alpha, strict=True)
        }
        return AggregationResult(result.aggregate, result.selected, {**result.info, **per_node})


class CRFL(_ComposedDefense):
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
        *args: Any,
        rho: float,
        sigma: float = 0.01,
        seed: int | None = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
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
