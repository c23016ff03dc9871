"""The server side of an attack run: forced participation, injection and measurements.

:func:`server_threat` wraps the server's Grid for a :class:`ThreatPlan`: strategy ->
:class:`AttackGrid` -> [:class:`~flower_suite.byzantine_injector.ByzantineInjector`, for the
omniscient attacks ALIE and IPM] -> the runner's ``MeteredGrid``. :class:`AttackGrid` does:

- **Fixed-frequency participation** (spec ``edge-case-backdoors.md`` section 4 and check
  11): Flower's strategies sample with ``random.sample`` over ``grid.get_node_ids()``, which
  cannot force a node in. So the strategy samples as usual (its ``random`` stream is
  unchanged) and, when the round's train instructions go out, this wrapper re-targets them
  to the partitions :func:`~flower_suite.attacks.schedule.sample_participants` picks: the attackers
  of an attack round plus ``m - #attackers`` honest partitions, or ``m`` honest partitions
  in other rounds. Instructions keep their content; only the destination node changes.
- **Measurements**: per train round, each reply's partition and update norm
  ``||reply - sent||_2`` over the float arrays, in float64, as the strategy sees it (after
  injection), for the attack hooks.

Fixed-pool attackers need neither: they are sampled like everyone else.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Message, MessageType
from flwr.serverapp import Grid

from flower_suite.attacks.schedule import FixedFrequency, sample_participants
from flower_suite.byzantine_injector import ByzantineInjector, round_of
from flower_suite.forwarding_grid import ForwardingGrid
from flower_suite.simulations.config import ExperimentConfig
from flower_suite.simulations.threats.plan import ThreatPlan
from flower_suite.wire.config import read_int
from flower_suite.wire.keys import CLIENT_INFO_KEY
from flower_suite.wire.updates import flat_update

__all__ = ["AttackGrid", "RoundObservation", "ServerThreat", "server_threat"]

logger = logging.getLogger(__name__)

# Seeds the re-targeting stream apart from the attackers' and clients' streams.
_SAMPLING_STREAM = 0x5A3D


@dataclass
class RoundObservation:
    """One train round as the strategy received it."""

    partitions: list[int] = field(default_factory=list)
    node_ids: list[int] = field(default_factory=list)
    norms: list[float] = field(default_factory=list)


def _partition(reply: Message) -> int:
    """The partition a reply reports (-1: none, or not a valid integer)."""
    info = reply.content.config_records.get(CLIENT_INFO_KEY)
    if info is None:
        return -1
    try:
        return read_int(info, "partition-id", default=-1)
    except (TypeError, ValueError):
        return -1


class AttackGrid(ForwardingGrid):
    """Forwards to ``inner``; re-targets fixed-frequency rounds and records update norms.

    Parameters
    ----------
    inner : Grid
        The grid below (``MeteredGrid``, possibly wrapped in a ``ByzantineInjector``).
    partitions : dict
        node id -> partition id, kept up to date by the ``MeteredGrid`` (shared object).
    schedule : FixedFrequency or None
        Forces attackers into their rounds when given; None leaves sampling alone.
    num_partitions, clients_per_round, seed : int
        ``K``, ``m`` and the experiment seed.
    """

    def __init__(
        self,
        inner: Grid,
        partitions: dict[int, int],
        schedule: FixedFrequency | None,
        *,
        num_partitions: int,
        clients_per_round: int,
        seed: int,
    ) -> None:
        self.inner = inner
        self.partitions = partitions
        self.schedule = schedule
        self.num_partitions = num_partitions
        self.clients_per_round = clients_per_round
        self.seed = seed
        self.rounds: dict[int, RoundObservation] = {}

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        train = [
            m for m in messages if m.metadata.message_type == MessageType.TRAIN and m.has_content()
        ]
        if train and self.schedule is not None:
            messages = self.retarget(messages, round_of(train[0]))
        replies = list(self.inner.send_and_receive(messages, timeout=timeout))
        if train:
            self.observe(messages, replies)
        return replies

    # --- forced participation -------------------------------------------------------------

    def participants(self, server_round: int) -> list[int]:
        """The partitions of ``server_round`` under the fixed-frequency schedule."""
        assert self.schedule is not None
        rng = np.random.default_rng([self.seed, server_round, _SAMPLING_STREAM])
        return sample_participants(
            self.schedule, self.num_partitions, self.clients_per_round, server_round, rng
        )

    def retarget(self, messages: list[Message], server_round: int) -> list[Message]:
        """``messages`` with the train instructions sent to this round's participants."""
        train = [m for m in messages if m.metadata.message_type == MessageType.TRAIN]
        if len(train) != self.clients_per_round or len(train) >= self.num_partitions:
            return messages  # everyone takes part, or a strategy sampling its own way
        node_of = {p: n for n, p in self.partitions.items()}
        looked_up = [node_of.get(p) for p in self.participants(server_round)]
        wanted = [node for node in looked_up if node is not None]
        if len(wanted) != len(looked_up):
            logger.warning("round %d: partitions unknown, sampling not forced", server_round)
            return messages
        keep = set(wanted)
        free = iter([n for n in wanted if n not in {int(m.metadata.dst_node_id) for m in train}])
        out = []
        for msg in messages:
            node = int(msg.metadata.dst_node_id)
            if msg.metadata.message_type != MessageType.TRAIN or node in keep:
                out.append(msg)
                continue
            out.append(
                Message(
                    content=msg.content,
                    message_type=msg.metadata.message_type,
                    dst_node_id=next(free),
                    group_id=msg.metadata.group_id,
                    ttl=msg.metadata.ttl,
                )
            )
        return out

    # --- measurements -----------------------------------------------------------------------

    def observe(self, messages: list[Message], replies: list[Message]) -> None:
        """Record each train reply's partition and float64 update norm."""
        sent = {
            int(m.metadata.dst_node_id): m
            for m in messages
            if m.metadata.message_type == MessageType.TRAIN and m.has_content()
        }
        for reply in replies:
            node = int(reply.metadata.src_node_id)
            if (
                reply.has_error()
                or not reply.has_content()
                or node not in sent
                or "arrays" not in reply.content.array_records
            ):
                continue
            instruction = sent[node]
            record = self.rounds.setdefault(round_of(instruction), RoundObservation())
            try:
                update, _ = flat_update(
                    reply.content.array_records["arrays"],
                    instruction.content.array_records["arrays"],
                )
            except ValueError:  # a malformed reply: the strategy rejects it, we skip it
                continue
            record.partitions.append(_partition(reply))
            record.node_ids.append(node)
            record.norms.append(float(np.linalg.norm(update)))


@dataclass
class ServerThreat:
    """The server's view of an attack run: the plan, the grid the strategy talks to and, for
    omniscient attacks, the injector below it."""

    plan: ThreatPlan
    grid: AttackGrid
    injector: ByzantineInjector | None = None


def server_threat(
    plan: ThreatPlan, inner: Grid, partitions: dict[int, int], config: ExperimentConfig
) -> ServerThreat:
    """Wrap ``inner`` (the runner's ``MeteredGrid``): strategy -> AttackGrid -> [injector] ->
    inner. ``partitions`` (node id -> partition id) is the inner grid's own dict, filled as
    nodes report their partitions."""
    below, injector = inner, None
    if plan.omniscient:
        injector = ByzantineInjector(
            inner, plan.attack.name, plan.schedule, seed=config.seed, **plan.attack.params
        )
        below = injector
    forced = plan.schedule if isinstance(plan.schedule, FixedFrequency) else None
    grid = AttackGrid(
        below,
        partitions,
        forced,
        num_partitions=config.num_clients,
        clients_per_round=config.sampled_clients,
        seed=config.seed,
    )
    return ServerThreat(plan=plan, grid=grid, injector=injector)
