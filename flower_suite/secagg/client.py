"""The client state machine (spec ``secagg.md`` section 6; Bonawitz et al. 2017, figure 4).

One :class:`SecAggClient` per client and round; its whole state is plain data
(:meth:`SecAggClient.to_dict` / :meth:`from_dict`: ints and bytes only) so a Flower mod can keep
it in ``Context.state`` between messages. Every handler checks the stage order and the round id
first and raises :class:`SecAggError` on anything unexpected; a setup message always restarts.
The parameters are validated as on the server, so a client refuses a threshold ``t <= k/2``
and, at unmasking, fewer than ``t`` announced survivors. The one non-fatal problem is a share
that fails authentication: it is discarded (:meth:`SecAggClient.receive_shares`).

What is shared (spec section 4): ``s_SK`` (the mask key, 32 raw bytes = 2 Shamir chunks) and
the self-mask seed ``b_u`` (16 bytes = 1 chunk); ``c_SK`` never leaves the client, so a
reconstructed ``s_SK`` does not let the server read share traffic.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from flower_suite.secagg import masks, shamir
from flower_suite.secagg.client_state import (
    SHARES_RECEIVED,
    ClientState,
    stage_label,
    state_from_dict,
    state_to_dict,
)
from flower_suite.secagg.crypto import (
    RandomSource,
    SystemRandomSource,
    agree,
    encryption_key,
    generate_keypair,
    id_bytes,
    open_sealed,
    private_key,
    seal,
    seed_commitment,
)
from flower_suite.secagg.errors import SecAggError
from flower_suite.secagg.messages import (
    AdvertiseKeys,
    MaskedInputReply,
    MaskedInputRequest,
    SetupRequest,
    ShareKeysReply,
    ShareKeysRequest,
    Stage,
    UnmaskReply,
    UnmaskRequest,
    setup_digest,
)
from flower_suite.secagg.params import SecAggParams
from flower_suite.secagg.quantize import EncodedInput, encode_input

logger = logging.getLogger(__name__)

SEED_BYTES = 16
# plaintext of an encrypted share: sender | receiver | index | s_SK share | b share
_S_SHARE = 32
_B_SHARE = 16
_PLAIN = 4 + 4 + shamir.INDEX_BYTES + _S_SHARE + _B_SHARE


class SecAggClient:
    """Client side of one SecAgg / SecAgg+ round.

    ``source`` supplies keys, seeds, nonces, polynomial coefficients and the stochastic
    rounding seed: the OS CSPRNG by default; a :class:`SeededRandomSource` in tests only.
    """

    def __init__(self, state: ClientState | None = None, *, source: RandomSource | None = None):
        self.state = state or ClientState()
        self.source = source or SystemRandomSource()
        self.last_input: EncodedInput | None = None  # local only, never sent (tests, logs)

    # -- persistence ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, int | bytes]:
        return state_to_dict(self.state)

    @classmethod
    def from_dict(
        cls, data: dict[str, object], *, source: RandomSource | None = None
    ) -> SecAggClient:
        return cls(state_from_dict(data), source=source)

    @property
    def params(self) -> SecAggParams:
        return SecAggParams.from_dict(self.state.params)

    def _expect(self, stage: Stage, round_id: bytes, completed: Stage) -> None:
        if self.state.stage != int(completed):
            last = stage_label(self.state.stage)
            raise SecAggError(
                f"unexpected {stage.label} message: the last completed stage is {last}, "
                f"expected {completed.label} (stages must arrive in order)"
            )
        if round_id != self.state.round_id:
            raise SecAggError(f"{stage.label} message belongs to another round (replayed?)")

    # -- stage 0 + 1 ------------------------------------------------------------------------
    def setup(self, request: SetupRequest) -> AdvertiseKeys:
        """Store the parameters, draw two fresh X25519 pairs (fresh every round, spec §1)."""
        params = request.params
        if not 1 <= request.secure_id <= params.n:
            raise SecAggError(f"secure id {request.secure_id} outside 1..{params.n}")
        c_sk, c_pk = generate_keypair(self.source)
        s_sk, s_pk = generate_keypair(self.source)
        self.state = ClientState(
            stage=int(Stage.ADVERTISE_KEYS),
            round_id=request.round_id,
            secure_id=request.secure_id,
            params=params.to_dict(),
            c_sk=c_sk,
            c_pk=c_pk,
            s_sk=s_sk,
            s_pk=s_pk,
        )
        return AdvertiseKeys(
            round_id=request.round_id, c_pk=c_pk, s_pk=s_pk, setup_digest=setup_digest(request)
        )

    # -- stage 2 ----------------------------------------------------------------------------
    def _check_share_keys(self, request: ShareKeysRequest) -> int:
        """Spec section 6, stage 2 checks; returns this client's position in the lists."""
        s, p = self.state, self.params
        ids, indices = list(request.ids), list(request.indices)
        if not len(ids) == len(indices) == len(request.c_pks) == len(request.s_pks):
            raise SecAggError("share-keys message: ids, indices and keys differ in length")
        if len(set(ids)) != len(ids) or any(not 1 <= v <= p.n for v in ids):
            raise SecAggError("share-keys message: neighbour ids repeat or fall outside 1..n")
        if len(set(indices)) != len(indices) or any(not 1 <= i <= p.k for i in indices):
            raise SecAggError("share-keys message: share indices repeat or fall outside 1..k")
        if len(ids) < p.t:
            raise SecAggError(f"only {len(ids)} neighbours advertised keys, threshold is {p.t}")
        if s.secure_id not in ids:
            raise SecAggError("share-keys message does not list this client")
        me = ids.index(s.secure_id)
        if request.c_pks[me] != s.c_pk or request.s_pks[me] != s.s_pk:
            raise SecAggError("the server echoed this client's public keys wrongly")
        all_keys = list(request.c_pks) + list(request.s_pks)
        if len(set(all_keys)) != len(all_keys):
            raise SecAggError("share-keys message: public keys are not pairwise distinct")
        # A low-order key from a lying server needs no extra check here: the key agreement
        # with it fails with SecAggError (an honest server drops such clients at stage 1).
        return me

    def share_keys(self, request: ShareKeysRequest) -> ShareKeysReply:
        """Check the neighbours' keys, Shamir-share ``s_SK`` and ``b_u``, encrypt per peer."""
        self._expect(Stage.SHARE_KEYS, request.round_id, Stage.ADVERTISE_KEYS)
        me = self._check_share_keys(request)
        s, p = self.state, self.params
        ids, indices = list(request.ids), list(request.indices)
        seed = self.source.token_bytes(SEED_BYTES)
        s_shares = shamir.split(s.s_sk, p.t, indices, self.source)
        b_shares = shamir.split(seed, p.t, indices, self.source)
        dsts, ciphertexts, dec_keys = [], [], []
        c_key = private_key(s.c_sk)
        for v, index, c_pk, s_share, b_share in zip(
            ids, indices, request.c_pks, s_shares, b_shares, strict=True
        ):
            if v == s.secure_id:
                dec_keys.append(b"")
                continue
            # one agreement per peer serves both directions (HKDF labels separate them)
            shared = agree(c_key, c_pk)
            dec_keys.append(encryption_key(shared, s.round_id, v, s.secure_id))
            plain = id_bytes(s.secure_id) + id_bytes(v) + shamir.encode_share(index, s_share)
            dsts.append(v)
            ciphertexts.append(
                seal(
                    encryption_key(shared, s.round_id, s.secure_id, v),
                    plain + b_share,
                    round_id=s.round_id,
                    stage=int(Stage.SHARE_KEYS),
                    sender=s.secure_id,
                    receiver=v,
                    source=self.source,
                )
            )
        self.state = replace(
            s,
            stage=int(Stage.SHARE_KEYS),
            seed=seed,
            peers=tuple(ids),
            peer_c_pks=tuple(request.c_pks),
            peer_s_pks=tuple(request.s_pks),
            peer_dec_keys=tuple(dec_keys),
            owners=(s.secure_id,),
            s_shares=(shamir.encode_share(indices[me], s_shares[me]),),
            b_shares=(shamir.encode_share(indices[me], b_shares[me]),),
        )
        return ShareKeysReply(
            round_id=s.round_id,
            dsts=tuple(dsts),
            ciphertexts=tuple(ciphertexts),
            commitment=seed_commitment(s.round_id, s.secure_id, seed),
        )

    # -- stage 3 ----------------------------------------------------------------------------
    def _open_share(self, src: int, sealed: bytes) -> tuple[bytes, bytes]:
        """Decrypt the share ``src`` sent here: ``(encoded s_SK share, encoded b share)``."""
        s = self.state
        plain = open_sealed(
            s.peer_dec_keys[s.peers.index(src)],
            sealed,
            round_id=s.round_id,
            stage=int(Stage.SHARE_KEYS),
            sender=src,
            receiver=s.secure_id,
        )
        if len(plain) != _PLAIN:
            raise SecAggError(f"share from client {src} has {len(plain)} bytes, expected {_PLAIN}")
        if int.from_bytes(plain[:4], "big") != src or int.from_bytes(plain[4:8], "big") != (
            s.secure_id
        ):
            raise SecAggError(f"share from client {src} names another sender or receiver")
        index = plain[8 : 8 + shamir.INDEX_BYTES]
        body = plain[8 + shamir.INDEX_BYTES :]
        return index + body[:_S_SHARE], index + body[_S_SHARE:]

    def receive_shares(self, request: MaskedInputRequest) -> None:
        """Decrypt and store the shares from ``N(u) ∩ U2``; run before local training so a
        bad request aborts early.

        A share that fails authentication (tampered, misrouted, replayed) or names the wrong
        pair is discarded with a warning, not fatal: this client still masks with its sender
        and the server reconstructs the sender's secrets from the other holders' shares. The
        round aborts only if fewer than ``t`` valid shares of some needed secret remain.
        """
        self._expect(Stage.MASKED_INPUT, request.round_id, Stage.SHARE_KEYS)
        s, p = self.state, self.params
        srcs = list(request.srcs)
        if len(srcs) != len(request.ciphertexts):
            raise SecAggError("masked-input message: sources and ciphertexts differ in length")
        if len(set(srcs)) != len(srcs) or s.secure_id in srcs or not set(srcs) <= set(s.peers):
            raise SecAggError("masked-input message: sources repeat or are not neighbours")
        if len(srcs) + 1 < p.t:
            raise SecAggError(f"only {len(srcs) + 1} neighbours shared keys, threshold is {p.t}")
        owners, s_shares, b_shares = list(s.owners), list(s.s_shares), list(s.b_shares)
        discarded = []
        for src, sealed in zip(srcs, request.ciphertexts, strict=True):
            try:
                s_share, b_share = self._open_share(src, sealed)
            except SecAggError as err:
                logger.warning("secagg client %d: discarding a share: %s", s.secure_id, err)
                discarded.append(src)
                continue
            owners.append(src)
            s_shares.append(s_share)
            b_shares.append(b_share)
        self.state = replace(
            s,
            stage=SHARES_RECEIVED,
            owners=tuple(owners),
            s_shares=tuple(s_shares),
            b_shares=tuple(b_shares),
            mask_peers=tuple(srcs),
            discarded=tuple(discarded),
            peer_dec_keys=(),
        )

    def masked_input(self, update: np.ndarray, num_examples: float) -> MaskedInputReply:
        """``y_u = x_u + PRG(b_u) + Σ_v δ_uv PRG(s_uv)`` over ``N(u) ∩ U2`` (spec §5 step 4)."""
        s, p = self.state, self.params
        if s.stage != SHARES_RECEIVED:
            raise SecAggError("masked input requested before the shares were received")
        rng = np.random.default_rng(int.from_bytes(self.source.token_bytes(16), "big"))
        encoded = encode_input(update, num_examples, p, rng)
        self.last_input = encoded
        if encoded.clipped_fraction > p.clip_warn_fraction:
            logger.warning(
                "secagg client %d: %.2f%% of %d entries were clipped to [-%g, %g]; raise "
                "clipping_range or the aggregate will be biased",
                s.secure_id,
                100.0 * encoded.clipped_fraction,
                encoded.vector.size - 1,
                p.c,
                p.c,
            )
        y = encoded.vector.copy()
        masks.add_mask(
            y,
            s.seed,
            sign=1,
            round_id=s.round_id,
            label=masks.self_mask_label(s.secure_id),
            mod_bits=p.mod_bits,
        )
        s_key = private_key(s.s_sk)
        for v in s.mask_peers:  # N(u) ∩ U2, including peers whose share was discarded
            secret = agree(s_key, s.peer_s_pks[s.peers.index(v)])
            masks.add_mask(
                y,
                secret,
                sign=masks.pair_sign(s.secure_id, v),
                round_id=s.round_id,
                label=masks.pair_mask_label(s.secure_id, v),
                mod_bits=p.mod_bits,
            )
        self.state = replace(s, stage=int(Stage.MASKED_INPUT))
        return MaskedInputReply(
            round_id=s.round_id,
            masked=masks.pack(y, p.mod_bits),
            length=int(y.size),
            clipped_fraction=encoded.clipped_fraction,
        )

    def masked_input_stage(
        self, request: MaskedInputRequest, update: np.ndarray, num_examples: float
    ) -> MaskedInputReply:
        """:meth:`receive_shares` then :meth:`masked_input`."""
        self.receive_shares(request)
        return self.masked_input(update, num_examples)

    # -- stage 4 ----------------------------------------------------------------------------
    def unmask(self, request: UnmaskRequest) -> UnmaskReply:
        """Reveal ``b``-shares of the alive and ``s_SK``-shares of the dropped, never both
        for the same client (else a late-but-alive client's input would be exposed).

        Refused (spec section 6, stage 4): repeated ids, a client in both lists, clients this
        one never masked with, this client listed as dropped, and fewer than ``t`` survivors
        announced. Shares discarded at stage 3 are omitted (the server sees which).
        """
        self._expect(Stage.UNMASK, request.round_id, Stage.MASKED_INPUT)
        s, p = self.state, self.params
        alive, dropped = set(request.alive), set(request.dropped)
        if len(alive) != len(request.alive) or len(dropped) != len(request.dropped):
            raise SecAggError("unmask message: repeated client ids")
        if alive & dropped:
            raise SecAggError(
                f"unmask message asks for both kinds of share of clients {sorted(alive & dropped)}"
            )
        unknown = (alive | dropped) - {s.secure_id, *s.mask_peers}
        if unknown:
            raise SecAggError(f"unmask message names clients {sorted(unknown)} not masked with")
        if s.secure_id not in alive:
            raise SecAggError("unmask message lists this (alive) client as dropped")
        if len(alive) < p.t:
            raise SecAggError(f"only {len(alive)} neighbours alive, threshold is {p.t}")
        position = {owner: i for i, owner in enumerate(s.owners)}
        b_owners = [v for v in request.alive if v in position]
        s_owners = [v for v in request.dropped if v in position]
        reply = UnmaskReply(
            round_id=s.round_id,
            b_owners=tuple(b_owners),
            b_shares=tuple(s.b_shares[position[v]] for v in b_owners),
            s_owners=tuple(s_owners),
            s_shares=tuple(s.s_shares[position[v]] for v in s_owners),
        )
        # the round is over: forget every secret (keys are fresh each round)
        self.state = ClientState(
            stage=int(Stage.UNMASK), round_id=s.round_id, secure_id=s.secure_id
        )
        return reply
