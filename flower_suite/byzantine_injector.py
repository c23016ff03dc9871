"""The omniscient Byzantine attacker, injected on the simulation side of the Grid.

ALIE (Baruch et al., NeurIPS 2019) and IPM (Xie et al., UAI 2019) assume attackers that
know every honest update of the round, which no Flower client can see. In simulation,
:class:`ByzantineInjector` wraps the server's ``Grid``: after each ``send_and_receive`` of
train instructions it computes the honest updates (reply - global model the node received),
and rewrites the replies of the active attacker partitions with the attack computed from
them (all attackers collude and, for ALIE/IPM, send the same vector).

Threat model: **omniscient, colluding attackers** - they see all honest updates of the round
before aggregation and coordinate. This is the worst case analysed in those papers, stronger
than any real client; it exists only in simulation. Any registered attack can be injected
this way (local ones too, e.g. to attack without changing the ClientApp).

The injector only touches replies to train instructions; evaluate and query replies pass
through unchanged. Attackers are recognised by the partition id their reply reports in the
``client-info`` ConfigRecord; rewritten replies carry the measurement-only ``attack-info``
record (strategies must not read it). Only ``send_and_receive`` is intercepted (Flower's
strategies use it); ``push_messages`` / ``pull_messages`` are forwarded untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Message, MessageType
from flwr.serverapp import Grid

from flower_suite.attacks.byzantine import BYZANTINE_ATTACKS, UpdateAttack
from flower_suite.attacks.schedule import AttackSchedule, as_schedule
from flower_suite.clients.client_app import client_seed
from flower_suite.forwarding_grid import ForwardingGrid
from flower_suite.wire.config import read_int
from flower_suite.wire.keys import CLIENT_INFO_KEY
from flower_suite.wire.updates import apply_update, flat_update, mark_attacker

logger = logging.getLogger(__name__)

# The injector's random stream, apart from every client's (partition ids are small).
_INJECTOR_STREAM = 2**31 - 1


@dataclass(frozen=True)
class InjectionRecord:
    """What the injector did in one train round."""

    server_round: int
    attackers: tuple[int, ...]  # partitions whose replies were rewritten
    num_honest: int


def _partition(reply: Message) -> int | None:
    info = reply.content.config_records.get(CLIENT_INFO_KEY)
    if info is None or "partition-id" not in info:
        return None
    return read_int(info, "partition-id")


def round_of(message: Message) -> int:
    """The server round a train instruction belongs to (its config, else its group id)."""
    config = message.content.config_records.get("config") if message.has_content() else None
    if config is not None and "server-round" in config:
        return read_int(config, "server-round")
    try:
        return int(message.metadata.group_id)  # Flower sets group_id = str(server_round)
    except ValueError:
        # Round 0 here would silently run the attack schedule (and its seeds) for the wrong
        # round; a strategy that sends neither is not one the injector understands.
        raise ValueError(
            "cannot tell the server round of a train message: no "
            f"'server-round' in its config and group_id {message.metadata.group_id!r} is not "
            "a round number"
        ) from None


class ByzantineInjector(ForwardingGrid):
    """A Grid that forwards everything to ``inner`` and rewrites attackers' train replies.

    Parameters
    ----------
    inner : Grid
        The real grid (or another wrapper such as the runner's ``MeteredGrid``).
    attack : str or UpdateAttack
        A :data:`~flower_suite.attacks.byzantine.BYZANTINE_ATTACKS` name (built with
        ``params``; e.g. ``"alie"``, ``"ipm"`` with ``epsilon=0.1``) or a configured attack.
    schedule : AttackSchedule or iterable of int
        Attacker partitions and when they act (partition ids mean a fixed pool).
    seed : int
        Seeds random attacks per round.

    ``records`` lists an :class:`InjectionRecord` per train round with an active attacker.
    ALIE's ``n`` and ``f`` default to the round's reply count and active attacker count.
    """

    def __init__(
        self,
        inner: Grid,
        attack: str | UpdateAttack,
        schedule: AttackSchedule | Iterable[int],
        *,
        seed: int = 0,
        **params: Any,
    ) -> None:
        self.inner = inner
        if isinstance(attack, UpdateAttack):
            self.attack = attack
        else:
            self.attack = BYZANTINE_ATTACKS.create(attack, **params)
        self.schedule = as_schedule(schedule)
        self.seed = seed
        self.records: list[InjectionRecord] = []

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        replies = list(self.inner.send_and_receive(messages, timeout=timeout))
        self.inject(messages, replies)
        return replies

    # --- the attack -------------------------------------------------------------------------

    def inject(self, instructions: list[Message], replies: list[Message]) -> None:
        """Rewrite, in place, the train replies of this round's active attackers."""
        sent: dict[int, Message] = {
            int(m.metadata.dst_node_id): m
            for m in instructions
            if m.metadata.message_type == MessageType.TRAIN and m.has_content()
        }
        usable = [
            r
            for r in replies
            if r.metadata.message_type == MessageType.TRAIN
            and not r.has_error()
            and r.has_content()
            and "arrays" in r.content.array_records
            and int(r.metadata.src_node_id) in sent
        ]
        if not usable:
            return
        server_round = round_of(sent[int(usable[0].metadata.src_node_id)])
        attackers: list[Message] = []
        honest: list[Message] = []
        for reply in usable:
            partition = _partition(reply)
            active = partition is not None and self.schedule.is_active(partition, server_round)
            (attackers if active else honest).append(reply)
        if not attackers:
            return
        if self.attack.needs_honest and not honest:
            logger.warning(
                "round %d: no honest replies, %s not injected", server_round, self.attack.name
            )
            return
        attackers, own, keys, received = self._updates(attackers, sent)
        honest_updates = self._updates(honest, sent)[1] if honest else None
        if own is None or (self.attack.needs_honest and honest_updates is None):
            return
        generator = torch.Generator().manual_seed(
            client_seed(self.seed, server_round, _INJECTOR_STREAM)
        )
        malicious = self.attack(own, honest_updates, generator).numpy()
        for reply, row, base in zip(attackers, malicious, received, strict=True):
            sent_arrays = reply.content.array_records["arrays"]
            reply.content["arrays"] = apply_update(base, sent_arrays, keys, row)
            mark_attacker(reply, self.attack.name, server_round)
        # (every attacker reported its partition: that is how it was recognised)
        partitions = tuple(p for r in attackers if (p := _partition(r)) is not None)
        self.records.append(InjectionRecord(server_round, partitions, len(honest)))

    @staticmethod
    def _updates(
        replies: list[Message], sent: dict[int, Message]
    ) -> tuple[list[Message], torch.Tensor | None, list[str], list[ArrayRecord]]:
        """The readable replies, their ``(k, d)`` float64 updates (reply - received global),
        the keys and the received models. A malformed reply is left alone (the strategy's
        reply validator excludes it) instead of ending the round here."""
        kept, rows, received, keys = [], [], [], None
        for reply in replies:
            base = sent[int(reply.metadata.src_node_id)].content.array_records["arrays"]
            try:
                row, row_keys = flat_update(reply.content.array_records["arrays"], base)
            except ValueError as err:
                logger.warning("node %d: reply not readable (%s)", reply.metadata.src_node_id, err)
                continue
            if keys is not None and row_keys != keys:
                raise ValueError("replies of one round hold different models")
            keys = row_keys
            kept.append(reply)
            rows.append(row)
            received.append(base)
        if not rows or keys is None:
            return [], None, [], []
        return kept, torch.from_numpy(np.stack(rows)), keys, received
