"""The base of the defense strategies: the round's layout for column masks, and an inner
aggregation rule bound by name (:data:`flower_suite.aggregation.AGGREGATORS`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Message

from flower_suite.aggregation.requirements import check_rule_params, min_inputs
from flower_suite.defenses.clipping import bind_rule
from flower_suite.strategies.contract import Capabilities
from flower_suite.strategies.decoding import ArrayLayout, DecodedReplies
from flower_suite.strategies.robust import RobustFedAvg

# Array-name suffixes left out of FLAME's clustering vector (BatchNorm statistics).
BATCHNORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def inner_min_replies(name: str, kwargs: Mapping[str, Any]) -> int:
    """Fewest updates the named ``AGGREGATORS`` rule accepts with ``kwargs``."""
    return min_inputs(name, kwargs) if isinstance(name, str) else 1


class DefenseBase(RobustFedAvg):
    """Keeps the round's array layout and flat global model for rules that need them."""

    # Clipping norms, cosine similarities and histories are measured on true updates.
    capabilities = Capabilities(needs_sent_model=True)

    # The round's layout and flat global model, set at each round's robust_step.
    _layout: ArrayLayout | None = None
    _global_flat: np.ndarray | None = None

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


class ComposedDefense(DefenseBase):
    """A defense that runs a named ``AGGREGATORS`` rule inside (NDC, weak DP, CRFL).

    Subclasses call :meth:`_bind_aggregation` from their constructor.
    """

    aggregation: str = "mean"
    aggregation_kwargs: dict[str, Any]

    def _bind_aggregation(
        self, aggregation: str, aggregation_kwargs: Mapping[str, Any] | None
    ) -> None:
        self.aggregation = aggregation
        self.aggregation_kwargs = dict(aggregation_kwargs or {})
        if isinstance(aggregation, str):
            check_rule_params(aggregation, self.aggregation_kwargs, owner=self.rule_name)
        self._inner = bind_rule(aggregation, self.aggregation_kwargs)  # checks name and kwargs

    def min_replies(self) -> int:
        return inner_min_replies(self.aggregation, self.aggregation_kwargs)

    def settings(self) -> dict[str, object]:
        return {"aggregation": self.aggregation, **self.aggregation_kwargs}
