"""FoolsGold (Fung, Yoon and Beschastnikh, RAID 2020, "The Limitations of Federated Learning in
Sybil Settings"), Algorithm 1 without the optional feature-importance weighting.

Sybils pushing one poisoning objective send updates that point the same way round after round.
FoolsGold keeps each client's summed history ``H_i = sum_t x_{i,t}`` and, per round:

1. ``cs_ij = cos(H_i, H_j)`` for ``i != j`` (float64), ``v_i = max(0, max_{j != i} cs_ij)``;
2. pardoning: ``cs_ij <- cs_ij * v_i / v_j`` whenever ``v_j > v_i`` (an honest client that
   happens to resemble a sybil is not punished for the sybil's similarity);
3. ``alpha_i = clip(1 - max_{j != i} cs_ij, 0, 1)``, then ``alpha <- alpha / max_i alpha``;
4. ``alpha_i <- clip(kappa * (ln(alpha_i / (1 - alpha_i)) + 0.5), 0, 1)`` (logit with the
   paper's confidence ``kappa``; ``alpha_i = 1`` maps to 1 and ``alpha_i = 0`` to 0).

The max in step 1 is floored at 0 (the reference implementation subtracts the identity from
the similarity matrix, which leaves a 0 on the diagonal of the row max); this keeps the
pardoning ratio non-negative when every similarity is negative.

Decisions:

- Histories are keyed by **node id** (:class:`FoolsGoldHistory`), never by list position, so
  partial participation and reply order cannot mix clients up.
- The round's update is ``sum_i alpha_i x_i / sum_i alpha_i`` (a weighted mean, equal to the
  plain mean when nobody is penalised; the paper's ``sum_i alpha_i x_i`` is a gradient step
  whose scale grows with ``n``). Reported sample counts are ignored: inflating them is a
  sybil's tool. If every ``alpha_i`` is 0 the update is zero.
- With a single client there is nobody to compare with: its weight is 1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch

from flower_suite.aggregation.base import AggregationResult, check_updates, weighted_sum_f64
from flower_suite.defenses.similarity import cosine_similarity

logger = logging.getLogger("flower_suite.defenses.foolsgold")


def _check_kappa(kappa: float) -> None:
    if (
        isinstance(kappa, bool)
        or not isinstance(kappa, int | float)
        or not (math.isfinite(kappa) and kappa > 0)
    ):
        raise ValueError(f"foolsgold: kappa must be a finite number > 0 (got kappa={kappa!r})")


def foolsgold_weights(history: torch.Tensor, *, kappa: float = 1.0) -> torch.Tensor:
    """FoolsGold learning-rate weights ``alpha`` (float64 ``(n,)``, in ``[0, 1]``).

    Parameters
    ----------
    history : torch.Tensor
        ``(n, d)`` summed update histories, one row per client.
    kappa : float, default 1.0
        Confidence of the logit (the paper's ``kappa``).

    Examples
    --------
    >>> h = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> foolsgold_weights(h)
    tensor([0., 0., 1.], dtype=torch.float64)
    """
    check_updates(history, rule="foolsgold")
    _check_kappa(kappa)
    n = history.shape[0]
    if n == 1:
        return torch.ones(1, dtype=torch.float64, device=history.device)
    cs = cosine_similarity(history)
    cs.fill_diagonal_(-math.inf)  # i != j everywhere below
    v = cs.max(dim=1).values.clamp(min=0.0)
    pardon = v[None, :] > v[:, None]  # pardon[i, j]: v_j > v_i
    ratio = v[:, None] / torch.where(pardon, v[None, :], torch.ones_like(cs))
    cs = torch.where(pardon, cs * ratio, cs)
    alpha = (1.0 - cs.max(dim=1).values).clamp(0.0, 1.0)
    top = float(alpha.max())
    if top == 0.0:
        return torch.zeros_like(alpha)
    alpha = alpha / top
    inner = (alpha > 0) & (alpha < 1)
    logit = torch.zeros_like(alpha)
    a = alpha[inner]
    logit[inner] = kappa * (torch.log(a / (1.0 - a)) + 0.5)
    logit[alpha >= 1.0] = 1.0
    return logit.clamp(0.0, 1.0)


def apply_foolsgold_weights(updates: torch.Tensor, alpha: torch.Tensor) -> AggregationResult:
    """``sum_i alpha_i x_i / sum_i alpha_i`` (zero when every ``alpha_i`` is 0).

    ``selected`` lists the rows with ``alpha_i > 0``; ``info``: ``min-weight``,
    ``mean-weight`` and ``zero-weight`` (how many clients got weight 0).
    """
    check_updates(updates, rule="foolsgold")
    alpha = alpha.to(device=updates.device, dtype=torch.float64)
    if alpha.shape != (updates.shape[0],):
        raise ValueError(f"foolsgold: need one weight per update, got {tuple(alpha.shape)}")
    total = float(alpha.sum())
    if total > 0:
        aggregate = weighted_sum_f64(updates, alpha / total).to(updates.dtype)
    else:  # every client looks like a sybil of another: all excluded, and said so
        logger.warning(
            "foolsgold: all %d clients got weight 0 (each too similar to another); "
            "the aggregate is zero (the global model is kept)",
            updates.shape[0],
        )
        aggregate = torch.zeros_like(updates[0])
    info = {
        "min-weight": float(alpha.min()),
        "mean-weight": float(alpha.mean()),
        "zero-weight": float((alpha == 0).sum()),
    }
    selected = tuple((alpha > 0).nonzero().flatten().tolist())
    return AggregationResult(aggregate=aggregate, selected=selected, info=info)


def foolsgold(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    history: torch.Tensor | None = None,
    kappa: float = 1.0,
) -> AggregationResult:
    """FoolsGold aggregation of one round.

    Parameters
    ----------
    updates : torch.Tensor
        ``(n, d)`` updates of this round.
    weights : torch.Tensor, optional
        Validated, then ignored (see the module docstring).
    history : torch.Tensor, optional
        ``(n, d)`` summed histories of the same clients, row for row, *including* this round
        (default: ``updates``, i.e. a memoryless FoolsGold). Use :class:`FoolsGoldHistory` to
        keep them across rounds.
    kappa : float, default 1.0
        Logit confidence.
    """
    check_updates(updates, weights, rule="foolsgold")
    history = updates if history is None else history
    if history.shape != updates.shape:
        raise ValueError(
            f"foolsgold: history must match updates {tuple(updates.shape)}, "
            f"got {tuple(history.shape)}"
        )
    return apply_foolsgold_weights(updates, foolsgold_weights(history, kappa=kappa))


class FoolsGoldHistory:
    """Per-client summed updates, keyed by node id (float64, on the updates' device).

    ``update(node_ids, updates)`` adds row ``k`` of ``updates`` to the history of
    ``node_ids[k]``; ``matrix(node_ids)`` stacks the histories in the order asked for. Memory
    is ``d`` float64 values per client ever seen.
    """

    def __init__(self) -> None:
        self._sums: dict[int, torch.Tensor] = {}
        self._rounds: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._sums)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._sums

    @property
    def node_ids(self) -> list[int]:
        """Every node with a history, in first-seen order."""
        return list(self._sums)

    def rounds(self, node_id: int) -> int:
        """How many updates of ``node_id`` were added."""
        return self._rounds.get(node_id, 0)

    def update(self, node_ids: Sequence[int], updates: torch.Tensor) -> None:
        """Add each row of ``updates`` to the history of its node id."""
        check_updates(updates, rule="foolsgold")
        ids = [int(i) for i in node_ids]
        if len(ids) != updates.shape[0] or len(set(ids)) != len(ids):
            raise ValueError(
                f"foolsgold: need {updates.shape[0]} distinct node ids, got {list(node_ids)}"
            )
        if self._sums:
            d = next(iter(self._sums.values())).shape[0]
            if updates.shape[1] != d:
                raise ValueError(f"foolsgold: update size {updates.shape[1]} != history size {d}")
        for row, node in enumerate(ids):
            value = updates[row].to(torch.float64)
            if node in self._sums:
                self._sums[node] += value
            else:
                self._sums[node] = value.clone()
            self._rounds[node] = self._rounds.get(node, 0) + 1

    def matrix(self, node_ids: Sequence[int]) -> torch.Tensor:
        """``(k, d)`` float64 histories of ``node_ids`` (each must have one)."""
        missing = [i for i in node_ids if i not in self._sums]
        if missing:
            raise KeyError(f"foolsgold: no history for node ids {missing}")
        return torch.stack([self._sums[int(i)] for i in node_ids])
