"""The Flower side of one SecAggPlus round: per-round records and the stage round trips.

:class:`SecAggRoundRecord` is what :class:`~flower_suite.strategies.secagg.SecAggPlus` keeps per
round (node ids, exclusions with reasons, skips). :class:`StageExchange` turns a stage's
protocol messages into Flower Messages, sends them with one ``Grid.send_and_receive`` and parses
the replies: an error reply, a missing or unreadable protocol record and a second reply from
one node each exclude that node with a recorded reason, never an exception.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from logging import WARNING
from typing import Any

from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from flower_suite.flower_compat import aggregate_metricrecords
from flower_suite.secagg import AggregateResult, SecAggError, SecAggParams, SecAggServer, Stage
from flower_suite.secagg.messages import Message as ProtocolMessage
from flower_suite.wire.keys import RECORD_KEY


@dataclass
class SecAggRoundRecord:
    """What the protocol did in one round (Flower node ids)."""

    sampled: list[int] = field(default_factory=list)
    survivors: list[int] = field(default_factory=list)
    dropped: dict[str, list[int]] = field(default_factory=dict)
    errors: list[tuple[int, str, str]] = field(default_factory=list)  # node, stage, reason
    clipped_fraction: dict[int, float] = field(default_factory=dict)
    aborted: str = ""
    server_cpu_s: float = 0.0
    total_weight: int = 0

    # the runner's selection hook reads these (same names as RoundRecord of robust.py)
    @property
    def selected(self) -> list[int]:
        """Nodes whose inputs are in the aggregate (U3)."""
        return self.survivors

    @property
    def rejected(self) -> list[tuple[int, str]]:
        return [(node, f"{stage}: {reason}") for node, stage, reason in self.errors]

    @property
    def info(self) -> dict[str, float]:
        return {
            "secagg-survivors": float(len(self.survivors)),
            "secagg-dropped": float(len(self.sampled) - len(self.survivors)),
            "secagg-clipped-fraction": max(self.clipped_fraction.values(), default=0.0),
            "secagg-server-cpu-s": self.server_cpu_s,
        }

    @property
    def skipped(self) -> str:
        return self.aborted


class StageExchange:
    """One ``send_and_receive`` per stage: protocol messages in, parsed replies out.

    Error replies, missing replies and unparsable ones are dropouts (recorded). The CPU time
    spent waiting inside ``send_and_receive`` (an in-process simulation runs clients there)
    is tracked so that the server's CPU time can exclude it.
    """

    def __init__(
        self,
        grid: Grid,
        server_round: int,
        nodes: list[int],
        timeout: float,
        record: SecAggRoundRecord,
        *,
        group_id: str | None = None,
    ) -> None:
        self.grid = grid
        self.group = str(server_round) if group_id is None else group_id
        self.nodes = nodes
        self.sid_of = {node: sid for sid, node in enumerate(nodes, start=1)}
        self.timeout = timeout
        self.record = record
        self.metrics: list[RecordDict] = []
        self.wait_cpu = 0.0

    def __call__(
        self,
        stage: Stage,
        requests: Mapping[int, ProtocolMessage],
        reply_type: type[ProtocolMessage],
        *,
        base: Mapping[int, RecordDict] | None = None,
        extra: Mapping[str, Any] | None = None,
        on_reply: Callable[[int, Any], None] | None = None,
    ) -> dict[int, Any]:
        messages = self.build(requests, base=base, extra=extra)
        start = time.process_time()
        replies = list(self.grid.send_and_receive(messages, timeout=self.timeout))
        self.wait_cpu += time.process_time() - start
        return self.collect(stage, requests, replies, reply_type, on_reply=on_reply)

    def build(
        self,
        requests: Mapping[int, ProtocolMessage],
        *,
        base: Mapping[int, RecordDict] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> list[Message]:
        """One Flower Message per request (secure id -> this exchange's node)."""
        messages = []
        for sid, request in requests.items():
            content = RecordDict(dict(base[sid].items())) if base else RecordDict()
            content[RECORD_KEY] = ConfigRecord({**request.to_dict(), **(extra or {})})
            messages.append(
                Message(
                    content=content,
                    dst_node_id=self.nodes[sid - 1],
                    message_type=MessageType.TRAIN,
                    group_id=self.group,
                )
            )
        return messages

    def collect(
        self,
        stage: Stage,
        requests: Mapping[int, ProtocolMessage],
        replies: Iterable[Message],
        reply_type: type[ProtocolMessage],
        *,
        on_reply: Callable[[int, Any], None] | None = None,
    ) -> dict[int, Any]:
        """Parse the replies to ``requests``: one per requested node, the first kept; replies
        from nodes that were not asked are ignored."""
        out: dict[int, Any] = {}
        answered: set[int] = set()
        for reply in replies:
            node = int(reply.metadata.src_node_id)
            known = self.sid_of.get(node)
            if known is None or known not in requests:
                continue
            sid = known
            if sid in answered:  # a second reply from one node: keep the first only
                self.record.errors.append((node, stage.label, "duplicate reply ignored"))
                continue
            answered.add(sid)
            parsed = self._parse(node, stage, reply, reply_type)
            if parsed is None:
                continue
            if on_reply is not None:
                on_reply(sid, parsed)
            else:
                out[sid] = parsed
            if reply.content.metric_records:
                self.metrics.append(RecordDict(dict(reply.content.metric_records.items())))
        return out

    def _parse(
        self, node: int, stage: Stage, reply: Message, reply_type: type[ProtocolMessage]
    ) -> ProtocolMessage | None:
        """The protocol message of ``reply``, or None (an error reply or an unparsable one:
        the node counts as dropped, with the reason recorded)."""
        if reply.has_error():
            self.record.errors.append((node, stage.label, str(reply.error.reason)))
            return None
        data = reply.content.config_records.get(RECORD_KEY)
        try:
            if data is None:
                raise SecAggError("reply has no secagg record")
            return reply_type.from_dict(dict(data))
        except (SecAggError, ValueError, TypeError, KeyError) as err:
            self.record.errors.append((node, stage.label, f"unreadable reply: {err}"))
            return None


def record_result(
    record: SecAggRoundRecord, result: AggregateResult, nodes: list[int], params: SecAggParams
) -> None:
    """Fill ``record`` from a completed round (secure ids -> node ids); warn about clipping."""
    record.survivors = [nodes[sid - 1] for sid in result.survivors]
    record.dropped = {k: [nodes[s - 1] for s in v] for k, v in result.dropped.items()}
    record.clipped_fraction = {nodes[s - 1]: f for s, f in result.clipped_fraction.items()}
    record.total_weight = result.total_weight
    for node, fraction in record.clipped_fraction.items():
        if fraction > params.clip_warn_fraction:
            log(
                WARNING,
                "SecAggPlus: node %d clipped %.2f%% of its update entries to +-%g",
                node,
                100 * fraction,
                params.c,
            )


def server_notes(server: SecAggServer | None, nodes: list[int]) -> list[tuple[int, str, str]]:
    """The server core's exclusions and left-out shares with node ids (reasons name clients
    by secure id: client ``i`` is ``record.sampled[i - 1]``)."""
    if server is None:
        return []
    return [(nodes[sid - 1], stage, reason) for sid, stage, reason in server.rejected]


def clear_metrics(replies: list[RecordDict], weight_key: str) -> MetricRecord:
    """Weighted mean of the clients' clear metrics (``metrics_in_clear``); replies without a
    usable weight are left out, and a failure leaves the metrics out, not the round."""
    usable = []
    for content in replies:
        first = next(iter(content.metric_records.values()), None)
        weight = first.get(weight_key) if first is not None else None
        if isinstance(weight, int | float) and not isinstance(weight, bool) and weight > 0:
            usable.append(content)
    try:
        return aggregate_metricrecords(usable, weight_key) if usable else MetricRecord()
    except (TypeError, ValueError, KeyError, ZeroDivisionError, OverflowError) as err:
        log(WARNING, "SecAggPlus: clear metrics left out: %s", err)
        return MetricRecord()
