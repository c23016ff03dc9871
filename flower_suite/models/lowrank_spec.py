"""How a model is factorized, as a value that travels in a round's config.

PUFFERFISH in federated training (spec ``pufferfish.md`` section 12): after the warm-up
rounds the server factorizes the global model once and every later instruction carries a
:class:`LowRankSpec` in its ConfigRecord, so each client rebuilds the same hybrid
architecture before loading the server's factors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from flower_suite.models.lowrank import factorize
from flower_suite.models.svd import check_rank_ratio

# ConfigRecord keys (kebab-case like the rest of the round config).
RATIO_KEY = "lowrank-ratio"
KEEP_KEY = "lowrank-keep"
KEEP_FIRST_LAST_KEY = "lowrank-keep-first-last"


@dataclass(frozen=True)
class LowRankSpec:
    """``factorize(model, rank_ratio, keep_full_rank, keep_first_and_last=...)`` as data."""

    rank_ratio: float
    keep_full_rank: tuple[str, ...] = ()
    keep_first_and_last: bool = True

    def __post_init__(self) -> None:
        check_rank_ratio(self.rank_ratio)
        if isinstance(self.keep_full_rank, str) or not all(
            isinstance(name, str) for name in self.keep_full_rank
        ):
            raise ValueError(
                f"keep_full_rank must be a sequence of module names, not {self.keep_full_rank!r}"
            )

    def apply(self, model: nn.Module, *, svd_init: bool = True) -> nn.Module:
        """The hybrid low-rank copy of ``model`` (``svd_init=False``: structure only)."""
        return factorize(
            model,
            self.rank_ratio,
            self.keep_full_rank,
            keep_first_and_last=self.keep_first_and_last,
            svd_init=svd_init,
        )

    def to_config(self) -> dict[str, Any]:
        """ConfigRecord entries announcing this architecture."""
        return {
            RATIO_KEY: float(self.rank_ratio),
            KEEP_KEY: list(self.keep_full_rank),
            KEEP_FIRST_LAST_KEY: bool(self.keep_first_and_last),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> LowRankSpec | None:
        """The spec a round config announces, or ``None`` for the full-rank model."""
        if config is None or RATIO_KEY not in config:
            return None
        keep = config.get(KEEP_KEY, [])
        return cls(
            rank_ratio=float(config[RATIO_KEY]),
            keep_full_rank=tuple(str(name) for name in keep),
            keep_first_and_last=bool(config.get(KEEP_FIRST_LAST_KEY, True)),
        )


def model_for_config(model: nn.Module, config: Mapping[str, Any] | None) -> nn.Module:
    """``model``, factorized (structure only) when ``config`` announces a low-rank phase."""
    spec = LowRankSpec.from_config(config)
    return model if spec is None else spec.apply(model, svd_init=False)
