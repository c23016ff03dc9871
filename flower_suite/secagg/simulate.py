"""In-memory driver: one full round between a server and ``n`` clients, with dropouts.

Used by the tests and the benchmark. Messages go through ``to_dict`` / ``from_dict`` (what
the Flower layer sends), so the byte counts are those of the wire payloads, and CPU time is
measured per party with ``time.process_time`` (the parties run one after another in this
process, so a party's CPU time is the sum of its calls).

``dropouts`` maps a stage to the secure ids that fail to answer it: ``Stage.SETUP`` and
``Stage.ADVERTISE_KEYS`` (one round trip), ``Stage.SHARE_KEYS``, ``Stage.MASKED_INPUT`` (the
expensive case) or ``Stage.UNMASK``; stage names (``"share_keys"``) and ints work too. It may
also be a callable ``(stage, server) -> ids``, called when the stage's requests are ready, to
pick dropouts from the server's (random) neighbour graph.

``tamper`` rewrites messages on the wire (the adversarial and fuzz tests): every message goes
through ``to_dict``, the hook, and ``from_dict``, exactly as over Flower. A client that refuses
a message (``SecAggError``) drops out, as the Flower mod's error reply makes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flower_suite.secagg.client import SecAggClient
from flower_suite.secagg.crypto import RandomSource, SeededRandomSource, SystemRandomSource
from flower_suite.secagg.errors import SecAggError
from flower_suite.secagg.messages import (
    AdvertiseKeys,
    MaskedInputReply,
    MaskedInputRequest,
    Message,
    SetupRequest,
    ShareKeysReply,
    ShareKeysRequest,
    Stage,
    UnmaskReply,
    UnmaskRequest,
)
from flower_suite.secagg.params import SecAggConfig, SecAggParams
from flower_suite.secagg.server import AggregateResult, SecAggServer


@dataclass
class RoundStats:
    """Cost of a simulated round."""

    server_cpu_s: float = 0.0
    client_cpu_s: dict[int, float] = field(default_factory=dict)
    bytes_up: dict[int, int] = field(default_factory=dict)  # client -> server, per client
    bytes_down: dict[int, int] = field(default_factory=dict)  # server -> client, per client
    stage_server_cpu_s: dict[str, float] = field(default_factory=dict)


@dataclass
class SimulatedRound:
    result: AggregateResult
    stats: RoundStats
    server: SecAggServer
    inputs: dict[int, np.ndarray]  # the clients' local x_u (never sent; for checking)
    client_errors: dict[int, str] = field(default_factory=dict)  # sid -> why it refused


DropoutFn = Callable[[Stage, SecAggServer], Iterable[int]]
# (stage of the message, secure id, "down" (server -> client) or "up", wire dict) -> the dict
# to deliver instead, or None to lose the message (an active attacker on one party's link)
Tamper = Callable[[Stage, int, str, dict[str, Any]], dict[str, Any] | None]


def _stage_of(key: Stage | str | int) -> Stage:
    if isinstance(key, str):
        return Stage[key.upper()]
    stage = Stage(int(key))
    return Stage.ADVERTISE_KEYS if stage == Stage.SETUP else stage


class _Driver:
    """Carries the messages of one round between the server and the clients, in turn."""

    def __init__(
        self,
        server: SecAggServer,
        clients: dict[int, SecAggClient],
        dropouts: dict[Stage, set[int]],
        dropout_fn: DropoutFn | None,
        tamper: Tamper | None,
        wire_log: dict[tuple[int, int, str], dict[str, Any]] | None,
    ) -> None:
        self.server, self.clients = server, clients
        self.drop, self.dropout_fn = dropouts, dropout_fn
        self.tamper, self.wire_log = tamper, wire_log
        self.stats = RoundStats()
        for sid in clients:
            self.stats.client_cpu_s[sid] = 0.0
            self.stats.bytes_up[sid] = 0
            self.stats.bytes_down[sid] = 0
        self.server_cpu: dict[str, float] = {}
        self.client_errors: dict[int, str] = {}

    def on_server(self, stage: Stage, fn: Any, *args: Any) -> Any:
        start = time.process_time()
        try:
            return fn(*args)
        finally:
            spent = time.process_time() - start
            self.server_cpu[stage.label] = self.server_cpu.get(stage.label, 0.0) + spent

    def _wire(self, message: Message, sid: int, direction: str) -> tuple[Message | None, int]:
        """Serialize, let the tamper hook act, parse back (as the Flower layer does).

        Returns ``(parsed or None when lost or unparsable, bytes on the wire)``; an
        unparsable message is the receiver's error: a client error, or a server rejection.
        """
        data, kind = message.to_dict(), type(message)
        size = message.wire_bytes()
        if self.tamper is not None:
            tampered = self.tamper(kind.STAGE, sid, direction, data)
            if tampered is None:
                return None, size
            data = tampered
        if self.wire_log is not None:
            self.wire_log[(int(kind.STAGE), sid, direction)] = dict(data)
        try:
            return kind.from_dict(data), size
        except SecAggError as err:
            if direction == "down":
                self.client_errors[sid] = str(err)
            else:
                self.server.reject(sid, kind.STAGE, str(err))
            return None, size

    def exchange(
        self, stage: Stage, requests: Mapping[int, Message], handle: Any
    ) -> dict[int, Message]:
        """One round trip; a client that raises :class:`SecAggError` drops out (recorded)."""
        if self.dropout_fn is not None and stage not in self.drop:
            self.drop[stage] = {int(i) for i in self.dropout_fn(stage, self.server)}
        replies: dict[int, Message] = {}
        for sid, request in requests.items():
            received, size = self._wire(request, sid, "down")
            self.stats.bytes_down[sid] += size
            if received is None or sid in self.drop.get(stage, ()):
                continue
            start = time.process_time()
            try:
                reply = handle(self.clients[sid], received)
            except SecAggError as err:
                self.client_errors[sid] = str(err)
                continue
            finally:
                self.stats.client_cpu_s[sid] += time.process_time() - start
            parsed, size = self._wire(reply, sid, "up")
            self.stats.bytes_up[sid] += size
            if parsed is not None:
                replies[sid] = parsed
        return replies

    def round(
        self, vectors: Sequence[np.ndarray] | np.ndarray, weights: Sequence[float]
    ) -> tuple[AggregateResult, dict[int, np.ndarray]]:
        """The four round trips; returns the result and each client's local ``x_u``."""
        server = self.server
        inputs: dict[int, np.ndarray] = {}

        def masked(client: SecAggClient, request: Message) -> MaskedInputReply:
            sid = client.state.secure_id
            reply = client.masked_input_stage(
                _as(request, MaskedInputRequest), np.asarray(vectors[sid - 1]), weights[sid - 1]
            )
            assert client.last_input is not None
            inputs[sid] = client.last_input.vector
            return reply

        setups: dict[int, Message] = self.on_server(Stage.SETUP, server.setup_requests)
        keys = self.exchange(
            Stage.ADVERTISE_KEYS, setups, lambda c, m: c.setup(_as(m, SetupRequest))
        )
        share_requests = self.on_server(
            Stage.ADVERTISE_KEYS, server.receive_keys, _cast(keys, AdvertiseKeys)
        )
        shares = self.exchange(
            Stage.SHARE_KEYS, share_requests, lambda c, m: c.share_keys(_as(m, ShareKeysRequest))
        )
        masked_requests = self.on_server(
            Stage.SHARE_KEYS, server.receive_share_keys, _cast(shares, ShareKeysReply)
        )
        # the server accumulates each masked vector as it arrives (streaming, O(l) memory)
        for sid, request in masked_requests.items():
            one = self.exchange(Stage.MASKED_INPUT, {sid: request}, masked)
            if sid in one:
                self.on_server(Stage.MASKED_INPUT, server.add_masked_input, sid, one[sid])
        unmask_requests = self.on_server(Stage.MASKED_INPUT, server.receive_masked_inputs, None)
        unmasks = self.exchange(
            Stage.UNMASK, unmask_requests, lambda c, m: c.unmask(_as(m, UnmaskRequest))
        )
        result = self.on_server(Stage.UNMASK, server.receive_unmask, _cast(unmasks, UnmaskReply))
        return result, inputs


def simulate_round(
    vectors: Sequence[np.ndarray] | np.ndarray,
    weights: Sequence[float] | None,
    params: SecAggParams | SecAggConfig,
    *,
    dropouts: Mapping[Stage | str | int, Iterable[int]] | DropoutFn | None = None,
    seed: int | None = None,
    tamper: Tamper | None = None,
    wire_log: dict[tuple[int, int, str], dict[str, Any]] | None = None,
) -> SimulatedRound:
    """Run one round over ``vectors`` (client ``i + 1`` holds ``vectors[i]``).

    ``weights`` are the example counts (default 1 each). ``seed`` makes keys, seeds, the graph
    and stochastic rounding deterministic (tests and benchmarks only); ``None`` uses the OS
    CSPRNG. ``tamper`` may rewrite or lose any message on the wire (see :data:`Tamper`);
    ``wire_log`` receives every delivered message dict keyed ``(stage, secure id,
    direction)`` (to replay them in another round). A client that refuses a message drops
    out (``SimulatedRound.client_errors``). Raises :class:`SecAggAbort` when the round cannot
    complete.
    """
    n = len(vectors)
    if isinstance(params, SecAggConfig):
        params = params.resolve(n)
    if params.n != n:
        raise ValueError(f"params are for n = {params.n} clients, got {n} vectors")
    weights = [1.0] * n if weights is None else list(weights)
    if len(weights) != n:
        raise ValueError(f"weights: expected {n} values, got {len(weights)}")
    drop: dict[Stage, set[int]] = {}
    if not callable(dropouts):
        for key, ids in (dropouts or {}).items():
            drop.setdefault(_stage_of(key), set()).update(int(i) for i in ids)

    def source(label: int) -> RandomSource:
        return (
            SystemRandomSource() if seed is None else SeededRandomSource(f"{seed}|{label}".encode())
        )

    length = int(np.asarray(vectors[0]).size) if n else 0
    start = time.process_time()
    server = SecAggServer(params, source=source(0), expected_length=length)
    clients = {sid: SecAggClient(source=source(sid)) for sid in range(1, n + 1)}
    run = _Driver(server, clients, drop, dropouts if callable(dropouts) else None, tamper, wire_log)
    run.server_cpu[Stage.SETUP.label] = time.process_time() - start
    result, inputs = run.round(vectors, weights)
    run.stats.server_cpu_s = sum(run.server_cpu.values())
    run.stats.stage_server_cpu_s = run.server_cpu
    return SimulatedRound(
        result=result,
        stats=run.stats,
        server=server,
        inputs=inputs,
        client_errors=run.client_errors,
    )


def _as(message: Message, kind: type) -> Any:
    assert isinstance(message, kind)
    return message


def _cast(replies: dict[int, Message], kind: type) -> dict[int, Any]:
    return {sid: _as(m, kind) for sid, m in replies.items()}
