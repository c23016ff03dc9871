"""Secure aggregation (SecAgg / SecAgg+), framework-free core.

Salvia-style protocol (seed 002; Bonawitz et al. CCS 2017; Bell et al. CCS 2020) as explicit
client and server state machines with typed messages; spec: ``shared/spec/secagg.md``.

- :class:`SecAggConfig` / :class:`SecAggParams`: settings, per-round resolution, validation;
  :func:`suggest_parameters` picks ``(k, t)`` for SecAgg+.
- :class:`SecAggClient`, :class:`SecAggServer`: the stages; :func:`simulate_round` runs a
  whole round in memory (tests, benchmarks).
- Primitives: ``crypto`` (X25519, HKDF, AES-GCM), ``shamir`` (GF(2^128), pycryptodome
  compatible), ``masks`` (AES-CTR PRG into modular arithmetic), ``quantize``, ``graph``.

Threat model (spec section 1; README "Threat model"): semi-honest server. Not provided:
security against an active (malicious) server in general (needs a PKI, signatures, a
consistency round and graph randomness the server cannot bias); clients do refuse what a
lying server would need most: thresholds ``t <= k/2``, fewer than ``t`` announced survivors,
both kinds of share of one client. One misbehaving client cannot crash a round: its invalid
key, shares or messages exclude it or are discarded (spare shares reconstruct), and a round
that cannot complete is a clean :class:`SecAggAbort`; an unmasked sum outside the range
quantization allows is refused. In-range garbage in one client's own input is undetectable.
Under secure aggregation the server sees only the sum, so robust rules (Krum, median, trimmed
mean, ...) cannot inspect individual updates.
"""

from flower_suite.secagg.client import ClientState, SecAggClient
from flower_suite.secagg.crypto import RandomSource, SeededRandomSource, SystemRandomSource
from flower_suite.secagg.errors import SecAggAbort, SecAggError
from flower_suite.secagg.messages import (
    PROTOCOL_VERSION,
    AdvertiseKeys,
    MaskedInputReply,
    MaskedInputRequest,
    SetupRequest,
    ShareKeysReply,
    ShareKeysRequest,
    Stage,
    UnmaskReply,
    UnmaskRequest,
)
from flower_suite.secagg.params import SecAggConfig, SecAggParams, suggest_parameters
from flower_suite.secagg.quantize import dequantize_mean, encode_input, quantize
from flower_suite.secagg.server import AggregateResult, SecAggServer
from flower_suite.secagg.simulate import RoundStats, SimulatedRound, simulate_round

__all__ = [
    "PROTOCOL_VERSION",
    "AdvertiseKeys",
    "AggregateResult",
    "ClientState",
    "MaskedInputReply",
    "MaskedInputRequest",
    "RandomSource",
    "RoundStats",
    "SecAggAbort",
    "SecAggClient",
    "SecAggConfig",
    "SecAggError",
    "SecAggParams",
    "SecAggServer",
    "SeededRandomSource",
    "SetupRequest",
    "ShareKeysReply",
    "ShareKeysRequest",
    "SimulatedRound",
    "Stage",
    "SystemRandomSource",
    "UnmaskReply",
    "UnmaskRequest",
    "dequantize_mean",
    "encode_input",
    "quantize",
    "simulate_round",
    "suggest_parameters",
]
