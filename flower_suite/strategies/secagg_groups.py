"""Several SecAgg+ instances at once: one per group, all groups in the same round trips.

:class:`GroupedProtocol` drives one :class:`~flower_suite.secagg.SecAggServer` per group
through the four stages of spec ``secagg.md`` section 6. Each stage's messages of every live
group go out in a single ``Grid.send_and_receive`` (a round costs four round trips whatever
the number of groups, and the groups' clients train in parallel); replies are routed back to
their group by sender. A group whose protocol stops (too few survivors, an unrecoverable
secret, an out-of-range sum) is marked aborted with the reason and takes no further part; the
other groups go on. Nothing a client sends raises out of :meth:`GroupedProtocol.run`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from flower_suite.secagg import (
    AdvertiseKeys,
    AggregateResult,
    MaskedInputReply,
    RandomSource,
    SecAggAbort,
    SecAggConfig,
    SecAggError,
    SecAggServer,
    ShareKeysReply,
    Stage,
    UnmaskReply,
)
from flower_suite.secagg.messages import Message as ProtocolMessage
from flower_suite.strategies.secagg_exchange import (
    SecAggRoundRecord,
    StageExchange,
    record_result,
    server_notes,
)

# The protocol's own stop, and the safety net for anything else a group's inputs break.
PROTOCOL_FAILURES = (SecAggAbort, SecAggError, ValueError)


@dataclass
class GroupRun:
    """One group's protocol instance in one round."""

    index: int  # 1-based
    nodes: list[int]
    exchange: StageExchange
    server: SecAggServer | None = None
    replies: dict[int, Any] = field(default_factory=dict)
    result: AggregateResult | None = None
    aborted: str = ""

    @property
    def record(self) -> SecAggRoundRecord:
        return self.exchange.record

    @property
    def live(self) -> bool:
        return not self.aborted and self.server is not None


class GroupedProtocol:
    """One round of group-wise secure aggregation over ``groups`` (lists of node ids)."""

    def __init__(
        self,
        grid: Grid,
        server_round: int,
        groups: Sequence[Sequence[int]],
        *,
        config: SecAggConfig,
        timeout: float,
        expected_length: int,
        source: RandomSource | None = None,
    ) -> None:
        self.grid = grid
        self.timeout = timeout
        self.wait_cpu = 0.0
        self.runs: list[GroupRun] = []
        for index, members in enumerate(groups, start=1):
            nodes = [int(n) for n in members]
            record = SecAggRoundRecord(sampled=nodes)
            exchange = StageExchange(
                grid, server_round, nodes, timeout, record, group_id=f"{server_round}.{index}"
            )
            run = GroupRun(index, nodes, exchange)
            try:
                params = config.resolve(len(nodes))
                run.server = SecAggServer(params, source=source, expected_length=expected_length)
            except PROTOCOL_FAILURES as err:
                self._abort(run, err)
            self.runs.append(run)

    def live(self) -> list[GroupRun]:
        return [run for run in self.runs if run.live]

    @staticmethod
    def _abort(run: GroupRun, err: Exception) -> None:
        run.aborted = str(err) or type(err).__name__
        run.record.aborted = run.aborted

    def run(self, instructions: Mapping[int, RecordDict], extra: Mapping[str, Any]) -> None:
        """The four stages for every group; stage 3 carries each node's training instruction
        (``instructions[node]``) with ``extra`` in its protocol record."""
        self.stage(Stage.SETUP, AdvertiseKeys, lambda r: _server(r).setup_requests())
        self.stage(Stage.SHARE_KEYS, ShareKeysReply, lambda r: _server(r).receive_keys(r.replies))
        self.stage(
            Stage.MASKED_INPUT,
            MaskedInputReply,
            lambda r: _server(r).receive_share_keys(r.replies),
            base_of=lambda r: {sid: instructions[n] for sid, n in enumerate(r.nodes, start=1)},
            extra=extra,
            on_reply_of=lambda r: _server(r).add_masked_input,
        )
        self.stage(Stage.UNMASK, UnmaskReply, lambda r: _server(r).receive_masked_inputs())
        for run in self.live():
            server = _server(run)
            try:
                run.result = server.receive_unmask(run.replies)
            except PROTOCOL_FAILURES as err:
                self._abort(run, err)
            else:
                record_result(run.record, run.result, run.nodes, server.params)
        for run in self.runs:
            run.record.errors.extend(server_notes(run.server, run.nodes))

    def stage(
        self,
        stage: Stage,
        reply_type: type[ProtocolMessage],
        requests_of: Callable[[GroupRun], Mapping[int, ProtocolMessage]],
        *,
        base_of: Callable[[GroupRun], Mapping[int, RecordDict]] | None = None,
        extra: Mapping[str, Any] | None = None,
        on_reply_of: Callable[[GroupRun], Callable[[int, Any], None]] | None = None,
    ) -> None:
        """One round trip for every live group; each group's parsed replies land in
        ``run.replies`` (or go to ``on_reply_of(run)``)."""
        pending: list[tuple[GroupRun, Mapping[int, ProtocolMessage]]] = []
        messages: list[Message] = []
        for run in self.live():
            try:
                requests = requests_of(run)
            except PROTOCOL_FAILURES as err:
                self._abort(run, err)
                continue
            base = base_of(run) if base_of is not None else None
            messages += run.exchange.build(requests, base=base, extra=extra)
            pending.append((run, requests))
        if not messages:
            return
        start = time.process_time()
        replies = list(self.grid.send_and_receive(messages, timeout=self.timeout))
        self.wait_cpu += time.process_time() - start
        by_node: dict[int, list[Message]] = defaultdict(list)
        for reply in replies:
            by_node[int(reply.metadata.src_node_id)].append(reply)
        for run, requests in pending:
            mine = [reply for node in run.nodes for reply in by_node.get(node, [])]
            on_reply = on_reply_of(run) if on_reply_of is not None else None
            try:
                run.replies = run.exchange.collect(
                    stage, requests, mine, reply_type, on_reply=on_reply
                )
            except PROTOCOL_FAILURES as err:
                self._abort(run, err)


@dataclass
class SecureRobustRoundRecord:
    """One round: the groups, each group's protocol record, what the rule did with them."""

    sampled: list[int] = field(default_factory=list)
    groups: list[list[int]] = field(default_factory=list)
    group_records: list[SecAggRoundRecord] = field(default_factory=list)
    aborted_groups: dict[int, str] = field(default_factory=dict)  # group index -> reason
    selected_groups: list[int] = field(default_factory=list)
    rule_skipped: str = ""
    server_cpu_s: float = 0.0

    # the runner's selection hook reads these (same names as robust.RoundRecord)
    @property
    def selected(self) -> list[int]:
        """Nodes whose inputs reached the rule inside a group mean it selected."""
        return [
            node
            for index in self.selected_groups
            for node in self.group_records[index - 1].survivors
        ]

    @property
    def rejected(self) -> list[tuple[int, str]]:
        out = [item for record in self.group_records for item in record.rejected]
        for index, reason in self.aborted_groups.items():
            out += [(node, f"group {index} aborted: {reason}") for node in self.groups[index - 1]]
        return out

    @property
    def info(self) -> dict[str, float]:
        return {
            "secure-groups": float(len(self.groups)),
            "secure-groups-aborted": float(len(self.aborted_groups)),
            "secure-groups-selected": float(len(self.selected_groups)),
            "secagg-server-cpu-s": self.server_cpu_s,
        }

    @property
    def skipped(self) -> str:
        return self.rule_skipped


def _server(run: GroupRun) -> SecAggServer:
    assert run.server is not None  # only live runs reach the stages
    return run.server
