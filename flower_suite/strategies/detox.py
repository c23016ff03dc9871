"""DETOX (Rajput et al., NeurIPS 2019; dissertation chapter 7) as a Flower strategy.

Nodes are split once into groups of ``redundancy`` (odd r); every member of a group is told to
train on the same data partition (``data-partition`` in its train config), so honest members
return bitwise-identical updates. Per round: a strict-majority vote inside each node group
removes Byzantine members, then HIER-AGGR aggregates the group winners: ``inner`` within each
of ``num_vote_groups`` random vote groups, ``outer`` across them.

DETOX needs the server to control data assignment: it fits simulations and cross-silo setups
with shared data, not privacy-preserving FL (the dissertation lists FL as future work).
Every node trains every round (groups must stay complete), so ``fraction_train`` is ignored.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from logging import INFO, WARNING
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from flower_suite.aggregation import AGGREGATORS
from flower_suite.aggregation.base import AggregationResult
from flower_suite.aggregation.detox import (
    check_vote_group_rule,
    detox_aggregate,
    make_node_groups,
    max_byzantine_groups,
)
from flower_suite.flower_compat import sample_nodes
from flower_suite.strategies.contract import Capabilities, ContractError, ExperimentSizes
from flower_suite.strategies.robust import DEFAULT_WEIGHT_CAP, MetricsAggr, RobustFedAvg

# Rules that take `num_malicious_nodes`: sized with the surviving Byzantine votes q_hat.
_F_RULES = ("krum", "multi_krum", "bulyan")


class DETOX(RobustFedAvg):
    """DETOX with node groups of ``redundancy`` and HIER-AGGR(``inner``, ``outer``).

    Parameters (FedAvg's in FedAvg's order, then keyword-only)
    ----------------------------------------------------------
    redundancy : int, default 3
        Odd node-group size r; the number of nodes must be a multiple of r.
    num_malicious_nodes : int, default 0
        q, the Byzantine nodes assumed among all nodes. Krum-family rules inside DETOX are
        sized with q_hat_max = floor(q / ((r + 1) / 2)), the most groups q Byzantines can win.
    num_vote_groups : int, default 1
        k; the p / r group winners are split into k random vote groups.
    inner, outer : str
        Rules from ``flower_suite.aggregation.AGGREGATORS`` (``mean``, ``median``,
        ``multi_krum``, ``bulyan``, ``geometric_median``, ``sign_majority``, ...).
    inner_params, outer_params : dict
        Keyword arguments of those rules.
    tolerance : float | None
        None: group members must agree bitwise; a float: ``allclose(rtol=tolerance)``.
    on_no_majority : "zero" | "drop"
        What a group without a majority contributes (the paper: a zero vector).
    seed : int
        Seeds the node-group and vote-group partitions.
    """

    rule_name = "DETOX"
    # Node groups are assigned in configure_train; every group member trains every round on
    # the partition the server names.
    capabilities = Capabilities(
        needs_sent_model=True,
        server_assigned_data=True,
        full_participation=True,
        simulation_only=True,
    )

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
        redundancy: int = 3,
        num_malicious_nodes: int = 0,
        num_vote_groups: int = 1,
        inner: str = "mean",
        outer: str = "median",
        inner_params: Mapping[str, Any] | None = None,
        outer_params: Mapping[str, Any] | None = None,
        tolerance: float | None = None,
        on_no_majority: str = "zero",
        seed: int = 0,
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
        if redundancy < 1 or redundancy % 2 == 0:
            raise ValueError(f"DETOX: redundancy must be odd and >= 1, not {redundancy}")
        if num_malicious_nodes < 0 or num_vote_groups < 1:
            raise ValueError(
                "DETOX: need num_malicious_nodes >= 0 and num_vote_groups >= 1 "
                f"(got {num_malicious_nodes}, {num_vote_groups})"
            )
        if on_no_majority not in ("zero", "drop"):
            raise ValueError(
                f"DETOX: on_no_majority must be 'zero' or 'drop', not {on_no_majority!r}"
            )
        self.redundancy = redundancy
        self.num_malicious_nodes = num_malicious_nodes
        self.num_vote_groups = num_vote_groups
        self.q_hat_max = max_byzantine_groups(num_malicious_nodes, redundancy)
        self.inner_name, self.outer_name = inner, outer
        self.inner = self._bind(inner, inner_params)
        self.outer = self._bind(outer, outer_params)
        self.tolerance = tolerance
        self.on_no_majority = on_no_majority
        self.seed = seed
        self.groups: dict[int, int] = {}  # node id -> node group (= data partition)

    def _bind(self, name: str, params: Mapping[str, Any] | None) -> Any:
        params = dict(params or {})
        key = name.lower().replace("-", "_")
        if key in _F_RULES:
            params.setdefault("num_malicious_nodes", self.q_hat_max)
        AGGREGATORS.check_kwargs(name, params, field=f"DETOX {name}")
        return functools.partial(AGGREGATORS.get(name), **params)

    def settings(self) -> dict[str, object]:
        return {
            "r": self.redundancy,
            "q": self.num_malicious_nodes,
            "q_hat_max": self.q_hat_max,
            "k": self.num_vote_groups,
            "inner": self.inner_name,
            "outer": self.outer_name,
        }

    def _assign_groups(self, node_ids: Sequence[int]) -> None:
        nodes = sorted(node_ids)
        p = len(nodes)
        node_groups = make_node_groups(p, self.redundancy, self.seed)
        self.groups = {nodes[i]: g for g, members in enumerate(node_groups) for i in members}
        check_vote_group_rule(
            num_nodes=p,
            num_byzantine=self.num_malicious_nodes,
            redundancy=self.redundancy,
            num_vote_groups=self.num_vote_groups,
            inner=self.inner_name,
            outer=self.outer_name,
        )
        log(INFO, "DETOX: %d nodes in %d groups of %d", p, len(node_groups), self.redundancy)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._global = arrays
        all_nodes = list(grid.get_node_ids())
        node_ids, _ = sample_nodes(grid, self.min_available_nodes, len(all_nodes))
        if not self.groups:
            self._assign_groups(node_ids)
        messages = []
        for node in node_ids:
            if node not in self.groups:
                log(WARNING, "DETOX: node %d joined after grouping; not used", node)
                continue
            node_config = ConfigRecord(
                {**config, "server-round": server_round, "data-partition": self.groups[node]}
            )
            content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: node_config})
            messages.append(
                Message(content=content, message_type=MessageType.TRAIN, dst_node_id=node)
            )
        return messages

    def min_replies(self) -> int:
        return self.redundancy

    def check_sizes(self, sizes: ExperimentSizes) -> None:
        """Every node trains every round, in complete groups of ``redundancy``, and the vote
        groups must be large enough for the inner rule (checked before the run, not at the
        first ``configure_train``)."""
        if sizes.num_clients % self.redundancy:
            raise ContractError(
                "num_clients",
                f"DETOX needs a multiple of redundancy={self.redundancy} nodes, "
                f"not {sizes.num_clients}",
            )
        if sizes.clients_per_round < sizes.num_clients:
            raise ContractError(
                "clients_per_round",
                "DETOX trains every node every round (groups must stay complete); "
                f"sample all {sizes.num_clients}",
            )
        try:
            check_vote_group_rule(
                num_nodes=sizes.num_clients,
                num_byzantine=self.num_malicious_nodes,
                redundancy=self.redundancy,
                num_vote_groups=self.num_vote_groups,
                inner=self.inner_name,
                outer=self.outer_name,
            )
        except ValueError as err:
            raise ContractError("strategy.num_vote_groups", str(err)) from None

    def rule(
        self, updates: torch.Tensor, weights: torch.Tensor, node_ids: Sequence[int]
    ) -> AggregationResult:
        by_group: dict[int, list[int]] = {g: [] for g in set(self.groups.values())}
        for row, node in enumerate(node_ids):
            by_group[self.groups[node]].append(row)
        # group_size=r: a group that lost members needs more than r/2 agreeing replies, so a
        # lone (possibly Byzantine) survivor cannot win it; empty groups have no majority.
        return detox_aggregate(
            updates,
            [rows for _, rows in sorted(by_group.items())],
            num_vote_groups=self.num_vote_groups,
            inner=self.inner,
            outer=self.outer,
            seed=self.seed + len(self.records),
            tolerance=self.tolerance,
            on_no_majority=self.on_no_majority,  # type: ignore[arg-type]
            allow_uneven=True,  # the paper splits 15 votes 7 + 8 (D-Multi-Krum)
            group_size=self.redundancy,
        )
