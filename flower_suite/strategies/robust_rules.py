"""Robust strategies, one thin class per rule of ``flower_suite.aggregation``.

Names follow Flower's (``Krum``, ``MultiKrum``, ``Bulyan``, ``FedMedian``, ``FedTrimmedAvg``)
so an existing ServerApp switches by changing one import. Unlike Flower's, every rule works
on updates with exact float64 distances, decodes each reply once, excludes bad replies
instead of failing the round, and records the selected node ids per round.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from flower_suite.aggregation.base import AggregationResult
from flower_suite.aggregation.bulyan import bulyan
from flower_suite.aggregation.clipping import centered_clipping
from flower_suite.aggregation.coordinate import coordinate_median, trimmed_mean
from flower_suite.aggregation.geometric_median import geometric_median
from flower_suite.aggregation.krum import krum, multi_krum
from flower_suite.aggregation.sign import sign_majority
from flower_suite.strategies.robust import RobustFedAvg


def _check_f(name: str, f: int) -> None:
    if not isinstance(f, int) or f < 0:
        raise ValueError(f"{name}: num_malicious_nodes must be an integer >= 0, not {f!r}")


class Krum(RobustFedAvg):
    """Krum (Blanchard et al., NeurIPS 2017): the update with the smallest sum of squared
    distances to its ``n - f - 2`` nearest neighbours. Needs ``n >= 2f + 3`` replies.

    Parameters (after FedAvg's): ``num_malicious_nodes`` (f), ``num_neighbours`` (default
    ``n - f - 2``; ByzFL and FLPoison use ``n - f - 1``).
    """

    rule_name = "Krum"

    def __init__(
        self,
        *args: Any,
        num_malicious_nodes: int = 0,
        num_neighbours: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        _check_f(self.rule_name, num_malicious_nodes)
        self.num_malicious_nodes = num_malicious_nodes
        self.num_neighbours = num_neighbours

    def min_replies(self) -> int:
        return 2 * self.num_malicious_nodes + 3

    def settings(self) -> dict[str, object]:
        return {"f": self.num_malicious_nodes, "neighbours": self.num_neighbours or "n-f-2"}

    def rule(
        self, updates: torch.Tensor, weights: torch.Tensor, node_ids: Sequence[int]
    ) -> AggregationResult:
        return krum(
            updates,
            weights,
            num_malicious_nodes=self.num_malicious_nodes,
            num_neighbours=self.num_neighbours,
        )


class MultiKrum(Krum):
    """Multi-Krum: the weighted mean of the ``num_nodes_to_select`` (default ``n - f``)
    updates with the lowest Krum scores. Needs ``n >= 2f + 3`` replies."""

    rule_name = "MultiKrum"

    def __init__(self, *args: Any, num_nodes_to_select: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.num_nodes_to_select = num_nodes_to_select

    def settings(self) -> dict[str, object]:
        return {**super().settings(), "m": self.num_nodes_to_select or "n-f"}

    def rule(
        self, updates: torch.Tensor, weights: torch.Tensor, node_ids: Sequence[int]
    ) -> AggregationResult:
        return multi_krum(
            updates,
            weights,
            num_malicious_nodes=self.num_malicious_nodes,
            num_nodes_to_select=self.num_nodes_to_select,
            num_neighbours=self.num_neighbours,
        )


class Bulyan(RobustFedAvg):
    """Bulyan (El Mhamdi et al., ICML 2018), the paper's iterative algorithm: theta = n - 2f
    Krum selections, then per coordinate the mean of the beta = theta - 2f values closest to
    the median. Needs ``n >= 4f + 3`` replies; ``variant="one_shot"`` is DETOX's variant."""

    rule_name = "Bulyan"

    def __init__(
        self, *args: Any, num_malicious_nodes: int = 0, variant: str = "iterative", **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        _check_f(self.rule_name, num_malicious_nodes)
        if variant not in ("iterative", "one_shot"):
            raise ValueError(f"Bulyan: variant must be 'iterative' or 'one_shot', not {variant!r}")
        self.num_malicious_nodes = num_malicious_nodes
        self.variant = variant

    def min_replies(self) -> int:
        return 4 * self.num_malicious_nodes + 3

    def settings(self) -> dict[str, object]:
        return {"f": self.num_malicious_nodes, "variant": self.variant}

    def rule(
        self, updates: torch.Tensor, weights: torch.Tensor, node_ids: Sequence[int]
    ) -> AggregationResult:
        return bulyan(
            updates, weights, num_malicious_nodes=self.num_malicious_nodes, variant=self.variant
        )


class FedMedian(RobustFedAvg):
    """Coordinate-wise median (Yin et al., ICML 2018); the true median for even n."""

    rule_name = "FedMedian"

    def rule(
        self, updates: torch.Tensor, weights: torch.Tensor, node_ids: Sequence[int]
    ) -> AggregationResult:
        return coordinate_median(updates, weights)


class FedTrimmedAvg(RobustFedAvg):
    """Coordinate-wise trimmed mean (Yin et al., ICML 2018): drop the ``floor(beta n)``
    largest and smallest values per coordinate, average the rest. Needs ``2 floor(beta n) < n``.
    """

    rule_name = "FedTrimmedAvg"

    def __init__(self, *args: Any, beta: float = 0.2, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not 0 <= beta < 0.5:
            raise ValueError(f"FedTrimmedAvg: beta must be in [0, 0.5), not {beta}")
        self.beta = beta

    def min_replies(self) -> int:
        # smallest n with 2 * floor(beta * n) < n
        n = 1
        while 2 * int(self.beta * n) >= n:
            n += 1
        return n

    def settings(self) -> dict[str, object]:
        return {"beta": self.beta}

    def rule(
        self, updates: torch.Tensor, weights: torch.Tensor, node_ids: Sequence[int]
    ) -> AggregationResult:
        return trimmed_mean(updates, weights, beta=self.beta)


class GeometricMedian(RobustFedAvg):
    """Geometric median by smoothed Weiszfeld, as in RFA (Pillutla et al., 2019), weighted by
    ``num-examples``. Parameters: ``nu`` (smoothing), ``max_iter``, ``ftol``."""

    rule_name = "GeometricMedian"

    def __init__(
        self,
        *args: Any,
        nu: float = 1e-5,
        max_iter: int = 500,
        ftol: float = 1e-7,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if nu <= 0 or max_iter < 1 or ftol < 0:
            raise ValueError(
                "GeometricMedian: need nu > 0, max_iter >= 1, ftol >= 0 "
                f"(got {nu}, {max_iter}, {ftol})"
            )
        self.nu, self.max_iter, self.ftol = nu, max_iter, ftol

    def settings(self) -> dict[str, object]:
        return {"nu": self.nu, "max_iter": self.max_iter, "ftol": self.ftol}

    def rule(
        self, updates: torch.Tensor, weights: torch.Tensor, node_ids: Sequence[int]
    ) -> AggregationResult:
        return geometric_median(
            updates, weights, nu=self.nu, max_iter=self.max_iter, ftol=self.ftol
        )


RFA = GeometricMedian


class SignSGD(RobustFedAvg):
    """signSGD with majority vote (Bernstein et al., 2018): the global model moves by
    ``server_learning_rate * sign(sum_i sign(update_i))`` (ties give 0)."""

    rule_name = "SignSGD"

    def __init__(self, *args: Any, server_learning_rate: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not server_learning_rate > 0:
            raise ValueError(
                f"SignSGD: server_learning_rate must be > 0, not {server_learning_rate}"
            )
        self.server_learning_rate = server_learning_rate

    def settings(self) -> dict[str, object]:
        return {"server_learning_rate": self.server_learning_rate}

    def rule(
        self, updates: torch.Tensor, weights: torch.Tensor, node_ids: Sequence[int]
    ) -> AggregationResult:
        vote = sign_majority(updates, weights)
        return AggregationResult(
            vote.aggregate * self.server_learning_rate, vote.selected, vote.info
        )


class CenteredClipping(RobustFedAvg):
    """Centered clipping (Karimireddy et al., ICML 2021): starting at zero, move towards each
    update by at most ``tau``; ``iterations`` refinement steps."""

    rule_name = "CenteredClipping"

    def __init__(self, *args: Any, tau: float = 1.0, iterations: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not tau > 0 or iterations < 1:
            raise ValueError(
                f"CenteredClipping: need tau > 0, iterations >= 1 (got {tau}, {iterations})"
            )
        self.tau, self.iterations = tau, iterations

    def settings(self) -> dict[str, object]:
        return {"tau": self.tau, "iterations": self.iterations}

    def rule(
        self, updates: torch.Tensor, weights: torch.Tensor, node_ids: Sequence[int]
    ) -> AggregationResult:
        return centered_clipping(updates, weights, tau=self.tau, iterations=self.iterations)
