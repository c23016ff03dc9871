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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flower_suite.secagg.client import SecAggClient
from flower_suite.secagg.crypto import RandomSource, SeededRandomSource, SystemRandomSource
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


DropoutFn = Callable[[Stage, SecAggServer], Iterable[int]]


def _stage_of(key: Stage | str | int) -> Stage:
    if isinstance(key, str):
        return Stage[key.upper()]
    stage = Stage(int(key))
    return Stage.ADVERTISE_KEYS if stage == Stage.SETUP else stage


def _roundtrip(message: Message) -> tuple[Message, int]:
    """Serialize and parse back, as the Flower layer does; returns the size too."""
    data = message.to_dict()
    return type(message).from_dict(data), message.wire_bytes()


def simulate_round(
    vectors: Sequence[np.ndarray] | np.ndarray,
    weights: Sequence[float] | None,
    params: SecAggParams | SecAggConfig,
    *,
    dropouts: Mapping[Stage | str | int, Iterable[int]] | DropoutFn | None = None,
    seed: int | None = None,
) -> SimulatedRound:
    """Run one round over ``vectors`` (client ``i + 1`` holds ``vectors[i]``).

    ``weights`` are the example counts (default 1 each). ``seed`` makes keys, seeds, the graph
    and stochastic rounding deterministic (tests and benchmarks only); ``None`` uses the OS
    CSPRNG. Raises :class:`SecAggAbort` when the dropouts exceed the tolerance.
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

    stats = RoundStats()
    server_cpu: dict[str, float] = {}

    def on_server(stage: Stage, fn: Any, *args: Any) -> Any:
        start = time.process_time()
        try:
            return fn(*args)
        finally:
            spent = time.process_time() - start
            server_cpu[stage.label] = server_cpu.get(stage.label, 0.0) + spent

    server = on_server(Stage.SETUP, lambda: SecAggServer(params, source=source(0)))
    clients = {sid: SecAggClient(source=source(sid)) for sid in range(1, n + 1)}
    for sid in clients:
        stats.client_cpu_s[sid] = 0.0
        stats.bytes_up[sid] = 0
        stats.bytes_down[sid] = 0

    def exchange(stage: Stage, requests: Mapping[int, Message], handle: Any) -> dict[int, Message]:
        if callable(dropouts) and stage not in drop:
            drop[stage] = {int(i) for i in dropouts(stage, server)}
        replies: dict[int, Message] = {}
        for sid, request in requests.items():
            received, size = _roundtrip(request)
            stats.bytes_down[sid] += size
            if sid in drop.get(stage, ()):
                continue
            start = time.process_time()
            reply = handle(clients[sid], received)
            stats.client_cpu_s[sid] += time.process_time() - start
            replies[sid], size = _roundtrip(reply)
            stats.bytes_up[sid] += size
        return replies

    inputs: dict[int, np.ndarray] = {}
    setups: dict[int, Message] = on_server(Stage.SETUP, server.setup_requests)
    keys = exchange(Stage.ADVERTISE_KEYS, setups, lambda c, m: c.setup(_as(m, SetupRequest)))
    share_requests = on_server(
        Stage.ADVERTISE_KEYS, server.receive_keys, _cast(keys, AdvertiseKeys)
    )
    shares = exchange(
        Stage.SHARE_KEYS, share_requests, lambda c, m: c.share_keys(_as(m, ShareKeysRequest))
    )
    masked_requests = on_server(
        Stage.SHARE_KEYS, server.receive_share_keys, _cast(shares, ShareKeysReply)
    )

    def masked(client: SecAggClient, request: Message) -> MaskedInputReply:
        sid = client.state.secure_id
        reply = client.masked_input_stage(
            _as(request, MaskedInputRequest), np.asarray(vectors[sid - 1]), weights[sid - 1]
        )
        assert client.last_input is not None
        inputs[sid] = client.last_input.vector
        return reply

    # the server accumulates each masked vector as it arrives (streaming, O(l) memory)
    masked_replies: dict[int, Message] = {}
    for sid, request in masked_requests.items():
        one = exchange(Stage.MASKED_INPUT, {sid: request}, masked)
        if sid in one:
            on_server(Stage.MASKED_INPUT, server.add_masked_input, sid, one[sid])
        masked_replies.update(one)
    unmask_requests = on_server(Stage.MASKED_INPUT, server.receive_masked_inputs, None)
    unmasks = exchange(Stage.UNMASK, unmask_requests, lambda c, m: c.unmask(_as(m, UnmaskRequest)))
    result = on_server(Stage.UNMASK, server.receive_unmask, _cast(unmasks, UnmaskReply))
    stats.server_cpu_s = sum(server_cpu.values())
    stats.stage_server_cpu_s = server_cpu
    return SimulatedRound(result=result, stats=stats, server=server, inputs=inputs)


def _as(message: Message, kind: type) -> Any:
    assert isinstance(message, kind)
    return message


def _cast(replies: dict[int, Message], kind: type) -> dict[int, Any]:
    return {sid: _as(m, kind) for sid, m in replies.items()}
