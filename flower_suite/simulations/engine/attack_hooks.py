"""Round hooks added automatically to runs with an ``[attack]`` section.

They read the :class:`~flower_suite.simulations.threats.ServerThreat` of the run (the attack
grid's observations and the plan) from the :class:`HookContext`.

- ``backdoor-acc`` / ``backdoor-loss``: the global model on the held-out edge-case test set
  with the attacker's target label (edge-case attacks only; the main accuracy is
  ``test-acc``, repeated as ``main-acc``). With honest edge holders, ``edge-clean-acc`` is the
  accuracy on the same images with their true label (the fairness check).
- ``attacker-participated`` / ``attacker-selected``: active attackers among the round's
  train replies, and among those the robust strategy selected (``records[round].selected``;
  a strategy without records, FedAvg, selects every reply). ``honest-edge-participated`` /
  ``honest-edge-selected`` likewise for honest edge holders.
- ``update-norm-mean`` / ``update-norm-median`` (honest replies), ``update-norm-attacker``
  (mean over active attackers), and ``update-norm-p<partition>`` per reply: every reply's
  ``||w_i - w||`` in float64, as the strategy received it (after any injection). Under
  secure aggregation no update is seen: participation and selection come from the secure
  strategy's sampled nodes and selected groups, and no norm is reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import ArrayRecord

from flower_suite.attacks.edge_case import relabel
from flower_suite.simulations.engine.hooks import HookContext, RoundHook, TestSetEvaluation
from flower_suite.simulations.threats import RoundObservation

__all__ = ["attack_metrics"]


def _selected_partitions(ctx: HookContext, server_round: int, received: list[int]) -> set[int]:
    """Node ids the strategy aggregated this round (all received without records)."""
    records = getattr(ctx.strategy, "records", None)
    record = records.get(server_round) if isinstance(records, dict) else None
    if record is None:
        return set(received)
    if record.skipped:
        return set()
    if record.selected:
        return {int(n) for n in record.selected}
    rejected = {int(n) for n, _ in record.rejected}
    return {n for n in received if n not in rejected}


def _masked_round(ctx: HookContext, server_round: int) -> RoundObservation | None:
    """Under secure aggregation the attack grid sees no update: the nodes the secure strategy
    sampled (its ``records[round].sampled``) and their partitions, without norms."""
    records = getattr(ctx.strategy, "records", None)
    record = records.get(server_round) if isinstance(records, dict) else None
    sampled = getattr(record, "sampled", None)
    if not sampled:
        return None
    partitions = getattr(ctx.grid, "partitions", {})
    nodes = [int(n) for n in sampled]
    return RoundObservation(partitions=[int(partitions.get(n, -1)) for n in nodes], node_ids=nodes)


def attack_metrics(ctx: HookContext) -> RoundHook:
    """Hook factory: backdoor accuracy, attacker selection and update norms (see module)."""
    if ctx.threat is None:
        raise ValueError("attack_metrics: the run has no [attack] section")
    plan, grid = ctx.threat.plan, ctx.threat.grid
    evaluations: list[TestSetEvaluation] = []
    if plan.edge_test is not None:
        evaluations.append(
            TestSetEvaluation(
                ctx.task.build_model, plan.edge_test, prefix="backdoor", model_for=ctx.model_for
            )
        )
        if plan.honest_edge and plan.source_label >= 0:
            clean = relabel(plan.edge_test, plan.source_label)
            evaluations.append(
                TestSetEvaluation(
                    ctx.task.build_model, clean, prefix="edge-clean", model_for=ctx.model_for
                )
            )
    holders = set(plan.honest_holders)

    def hook(server_round: int, arrays: ArrayRecord) -> Mapping[str, Any]:
        out: dict[str, Any] = {}
        for evaluation in evaluations:
            out.update(evaluation(server_round, arrays))
        observed = grid.rounds.get(server_round) or _masked_round(ctx, server_round)
        if observed is None:  # round 0 (the initial model) or a round without training
            return out
        selected = _selected_partitions(ctx, server_round, observed.node_ids)
        attackers = np.array(
            [plan.schedule.is_active(p, server_round) for p in observed.partitions], dtype=bool
        )
        chosen = np.array([node in selected for node in observed.node_ids], dtype=bool)
        is_holder = np.array([p in holders for p in observed.partitions], dtype=bool)
        out.update(
            {
                "attacker-participated": float(attackers.sum()),
                "attacker-selected": float((attackers & chosen).sum()),
                "honest-edge-participated": float(is_holder.sum()),
                "honest-edge-selected": float((is_holder & chosen).sum()),
            }
        )
        if not observed.norms:  # secure aggregation: nobody sees an update
            return out
        norms = np.asarray(observed.norms, dtype=np.float64)
        honest = norms[~attackers]
        # One scalar column per partition (run files plot and tabulate scalars).
        out.update(
            {f"update-norm-p{p}": float(v) for p, v in zip(observed.partitions, norms, strict=True)}
        )
        if len(honest):
            out["update-norm-mean"] = float(honest.mean())
            out["update-norm-median"] = float(np.median(honest))
        if attackers.any():
            out["update-norm-attacker"] = float(norms[attackers].mean())
        return out

    return hook
