"""Participation patterns of attackers (framework-free).

Wang et al., "Attack of the Tails", NeurIPS 2020, section 4 of ``edge-case-backdoors.md``:

- **Fixed frequency**: the attacker takes part every ``N`` rounds; in such a round the
  server samples ``m - 1`` honest clients and adds the attacker (reference implementation).
  Use :meth:`FixedFrequency.forced_participants` / :func:`sample_participants` server-side.
- **Fixed pool**: a fixed set of attackers among the ``K`` clients; clients are sampled
  uniformly, so a round may hold zero, one or several attackers, each acting independently.

``is_active(partition_id, server_round)`` tells an attack whether to act: an attacker
partition outside its active rounds behaves honestly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class AttackSchedule(Protocol):
    """Who attacks when."""

    # Read-only, so the frozen dataclasses below satisfy it (a plain attribute here would
    # ask implementations to allow assignment).
    @property
    def attacker_partitions(self) -> frozenset[int]: ...

    def is_active(self, partition_id: int, server_round: int) -> bool: ...


def _partitions(ids: Iterable[int]) -> frozenset[int]:
    out = frozenset(int(i) for i in ids)
    if any(i < 0 for i in out):
        raise ValueError(f"partition ids must be >= 0, got {sorted(out)}")
    return out


@dataclass(frozen=True)
class FixedFrequency:
    """Attackers act in rounds ``t >= start_round`` with ``(t - start_round) % every_k == 0``.

    ``start_round`` defaults to ``every_k``, i.e. the rounds ``t = 0 (mod every_k)`` of the
    spec; set it after the warm-up rounds (e.g. 21 with ``every_k = 1``).
    """

    attacker_partitions: frozenset[int]
    every_k: int = 10
    start_round: int | None = None

    def __init__(
        self, attacker_partitions: Iterable[int], every_k: int = 10, start_round: int | None = None
    ) -> None:
        if every_k < 1:
            raise ValueError(f"every_k must be >= 1, got {every_k}")
        object.__setattr__(self, "attacker_partitions", _partitions(attacker_partitions))
        object.__setattr__(self, "every_k", int(every_k))
        object.__setattr__(self, "start_round", None if start_round is None else int(start_round))

    @property
    def first_round(self) -> int:
        """The first attack round (``start_round``, or ``every_k`` when not given)."""
        return self.every_k if self.start_round is None else self.start_round

    def is_attack_round(self, server_round: int) -> bool:
        """Whether ``server_round`` is an attack round."""
        first = self.first_round
        return server_round >= first and (server_round - first) % self.every_k == 0

    def is_active(self, partition_id: int, server_round: int) -> bool:
        return partition_id in self.attacker_partitions and self.is_attack_round(server_round)

    def forced_participants(self, server_round: int) -> tuple[int, ...]:
        """The attacker partitions the server must add to this round's sample."""
        return tuple(sorted(self.attacker_partitions)) if self.is_attack_round(server_round) else ()


@dataclass(frozen=True)
class FixedPool:
    """Attackers are ordinary clients that act whenever sampled (from ``start_round`` on)."""

    attacker_partitions: frozenset[int]
    start_round: int = 1

    def __init__(self, attacker_partitions: Iterable[int], start_round: int = 1) -> None:
        object.__setattr__(self, "attacker_partitions", _partitions(attacker_partitions))
        object.__setattr__(self, "start_round", int(start_round))

    @classmethod
    def random(
        cls, num_partitions: int, pool_size: int, seed: int, start_round: int = 1
    ) -> FixedPool:
        """A pool of ``pool_size`` partitions drawn uniformly from ``range(num_partitions)``."""
        if not 0 <= pool_size <= num_partitions:
            raise ValueError(f"pool_size must be in [0, {num_partitions}], got {pool_size}")
        pool = np.random.default_rng(seed).choice(num_partitions, pool_size, replace=False)
        return cls(pool.tolist(), start_round)

    def is_active(self, partition_id: int, server_round: int) -> bool:
        return partition_id in self.attacker_partitions and server_round >= self.start_round

    def forced_participants(self, server_round: int) -> tuple[int, ...]:
        """None: pool attackers are sampled like everyone else."""
        return ()


def sample_participants(
    schedule: FixedFrequency | FixedPool,
    num_partitions: int,
    m: int,
    server_round: int,
    rng: np.random.Generator,
) -> list[int]:
    """The partitions taking part in ``server_round`` under ``schedule`` (sorted).

    Fixed pool: ``m`` of all ``num_partitions`` uniformly. Fixed frequency: the attackers
    of an attack round plus ``m - #attackers`` honest partitions; in other rounds ``m``
    honest partitions (the attacker only shows up in its rounds, as in the paper).
    """
    if not 0 < m <= num_partitions:
        raise ValueError(f"m must be in [1, {num_partitions}], got {m}")
    if isinstance(schedule, FixedPool):
        return sorted(rng.choice(num_partitions, m, replace=False).tolist())
    forced = [p for p in schedule.forced_participants(server_round) if p < num_partitions]
    honest = np.array(
        [p for p in range(num_partitions) if p not in schedule.attacker_partitions], dtype=int
    )
    need = m - len(forced)
    if need < 0 or need > len(honest):
        raise ValueError(f"cannot sample {m} partitions with {len(forced)} forced attackers")
    return sorted(forced + rng.choice(honest, need, replace=False).tolist())


def as_schedule(attackers: AttackSchedule | Iterable[int]) -> AttackSchedule:
    """A schedule, or a fixed pool of the given partition ids."""
    return attackers if isinstance(attackers, AttackSchedule) else FixedPool(attackers)
