"""What a secure-aggregation client keeps between stages, as plain data.

A Flower mod rebuilds the client from ``Context.state`` at every message, so the state is a
dataclass of ints, bytes and tuples with a fixed dict form (ids and blobs packed into bytes,
the round's parameters as ``p_<name>``): no pickle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flower_suite.secagg.messages import Stage, pack_blobs, pack_ids, unpack_blobs, unpack_ids

IDLE = -1
SHARES_RECEIVED = 30  # within stage 3: shares stored, masked vector not yet sent


@dataclass
class ClientState:
    """Everything a client remembers between stages (plain data)."""

    stage: int = IDLE  # last completed stage
    round_id: bytes = b""
    secure_id: int = 0
    params: dict[str, object] = field(default_factory=dict)
    c_sk: bytes = b""
    c_pk: bytes = b""
    s_sk: bytes = b""
    s_pk: bytes = b""
    seed: bytes = b""  # b_u
    peers: tuple[int, ...] = ()  # N(u) ∩ U1 (incl. u), from stage 2
    peer_c_pks: tuple[bytes, ...] = ()
    peer_s_pks: tuple[bytes, ...] = ()
    peer_dec_keys: tuple[bytes, ...] = ()  # keys of the shares peers send here (one X25519 each)
    owners: tuple[int, ...] = ()  # whose valid shares this client holds (u first)
    s_shares: tuple[bytes, ...] = ()  # encoded (index | share), aligned with owners
    b_shares: tuple[bytes, ...] = ()
    # N(u) ∩ U2 without u: the peers this client masks with (stage 3). A peer whose share
    # failed to decrypt is masked with all the same (its public key is known), so the pairwise
    # masks still cancel; only its share is missing (``discarded``), and the server
    # reconstructs that peer's secrets from the spare shares of the other holders.
    mask_peers: tuple[int, ...] = ()
    discarded: tuple[int, ...] = ()


_INT_FIELDS = ("stage", "secure_id")
_BYTES_FIELDS = ("round_id", "c_sk", "c_pk", "s_sk", "s_pk", "seed")
_ID_FIELDS = ("peers", "owners", "mask_peers", "discarded")
_BLOB_FIELDS = ("peer_c_pks", "peer_s_pks", "peer_dec_keys", "s_shares", "b_shares")


def stage_label(stage: int) -> str:
    if stage == IDLE:
        return "none"
    if stage == SHARES_RECEIVED:
        return "masked_input (shares received, no masked vector sent)"
    return Stage(stage).label


def state_to_dict(s: ClientState) -> dict[str, int | bytes]:
    out: dict[str, int | bytes] = {name: getattr(s, name) for name in _INT_FIELDS}
    out.update({name: getattr(s, name) for name in _BYTES_FIELDS})
    out.update({name: pack_ids(getattr(s, name)) for name in _ID_FIELDS})
    out.update({name: pack_blobs(list(getattr(s, name))) for name in _BLOB_FIELDS})
    out.update({f"p_{k}": v for k, v in s.params.items()})  # type: ignore[misc]
    return out


def state_from_dict(data: dict[str, object]) -> ClientState:
    state = ClientState()
    for name in _INT_FIELDS + _BYTES_FIELDS:
        if name in data:
            setattr(state, name, data[name])
    for name in _ID_FIELDS:
        if name in data:
            setattr(state, name, tuple(unpack_ids(data[name])))  # type: ignore[arg-type]
    for name in _BLOB_FIELDS:
        if name in data:
            setattr(state, name, tuple(unpack_blobs(data[name])))  # type: ignore[arg-type]
    state.params = {k[2:]: v for k, v in data.items() if k.startswith("p_")}
    return state
