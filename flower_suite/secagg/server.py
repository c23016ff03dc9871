"""The server state machine (spec ``secagg.md`` section 6; Bonawitz et al. 2017, figure 4;
Bell et al. 2020 for the sparse graph).

The server is driven by the replies of each stage (a dict ``secure_id -> reply``; a client
missing from it dropped out). After each stage it re-checks that at least ``m`` clients survive
and that every secret that may still be needed keeps ``t`` potential share holders; otherwise
it raises :class:`SecAggAbort` naming the stage and the counts, and no aggregate is released.
A malformed reply counts as a dropout (recorded in :attr:`SecAggServer.rejected`).

No client's bytes can make the server raise anything but :class:`SecAggAbort`: an invalid
public key drops its owner at stage 1, bad shares are left out and the secrets reconstructed
from spare shares (``recovery.py``), and the unmasked sum must lie in the range honest inputs
allow (:func:`~flower_suite.secagg.quantize.sum_violation`) before it is released.

Cost (spec section 7): routing ``O(n k)`` ciphertexts, accumulating ``|U3|`` vectors,
``|U3|`` self-mask and ``Σ_{dropped} |N(v) ∩ U3|`` pairwise-mask expansions and
``|U3| + |U2 \\ U3|`` reconstructions (cached Lagrange coefficients, see ``shamir.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from flower_suite.secagg import masks
from flower_suite.secagg.crypto import RandomSource, SystemRandomSource, check_public_key
from flower_suite.secagg.errors import SecAggAbort, SecAggError
from flower_suite.secagg.graph import build_graph
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
from flower_suite.secagg.quantize import dequantize_mean, sum_violation
from flower_suite.secagg.recovery import ShareTable, Unmasking, read_unmask_reply

ROUND_ID_BYTES = 16


@dataclass
class AggregateResult:
    """The unmasked sum and what happened in the round."""

    total: np.ndarray  # Z = Σ_{u ∈ U3} x_u mod M, length l + 1 (entry 0: total weight)
    mean: np.ndarray  # float64 weighted mean of the clipped inputs, length l
    survivors: tuple[int, ...]  # U3: the clients whose inputs are in the sum
    dropped: dict[str, tuple[int, ...]] = field(default_factory=dict)  # stage -> ids
    clipped_fraction: dict[int, float] = field(default_factory=dict)

    @property
    def total_weight(self) -> int:
        return int(self.total[0])


class SecAggServer:
    """Server side of one round for ``params.n`` clients with secure ids ``1..n``.

    ``source`` draws the round id and the graph permutation (OS CSPRNG by default; a seeded
    source in tests only). ``expected_length`` is the model length ``l`` when known (masked
    vectors then have ``l + 1`` entries); otherwise the first masked vector fixes it.
    """

    def __init__(
        self,
        params: SecAggParams,
        *,
        source: RandomSource | None = None,
        expected_length: int | None = None,
    ) -> None:
        self.params = params
        self.source = source or SystemRandomSource()
        self.round_id = self.source.token_bytes(ROUND_ID_BYTES)
        self.graph = build_graph(params.n, params.k, self.source)
        self.expected_length = None if expected_length is None else expected_length + 1
        self.stage = Stage.SETUP
        self.alive: dict[Stage, set[int]] = {Stage.SETUP: set(range(1, params.n + 1))}
        self.rejected: list[tuple[int, str, str]] = []
        self.c_pks: dict[int, bytes] = {}
        self.s_pks: dict[int, bytes] = {}
        self.commitments: dict[int, bytes] = {}
        self._inbox: dict[int, list[tuple[int, bytes]]] = {}
        self._sum: np.ndarray | None = None
        self._masked_from: set[int] = set()
        self.clipped_fraction: dict[int, float] = {}
        self._suspects: set[int] = set()  # holders caught with an invalid share
        self._setup_digests: dict[int, bytes] = {}

    # -- helpers ----------------------------------------------------------------------------
    def _advance(self, expected: Stage, new: Stage) -> None:
        if self.stage != expected:
            raise SecAggError(f"server called for {new.label} after {self.stage.label}")
        self.stage = new

    def reject(self, sid: int, stage: Stage, reason: str) -> None:
        """Record an excluded reply, or a part of a reply left out (the reason says which)."""
        self.rejected.append((sid, stage.label, reason))

    def neighbours(self, sid: int, among: set[int]) -> list[int]:
        return [v for v in self.graph[sid] if v in among]

    def _check(self, stage: Stage, survivors: set[int], needs: set[int], holders: set[int]) -> None:
        """``|survivors| >= m`` and every client in ``needs`` has ``t`` neighbours in
        ``holders`` (potential share holders / key-sharing partners)."""
        p = self.params
        if len(survivors) < p.m:
            raise SecAggAbort(
                stage.label,
                "fewer clients survive than the minimum",
                {"survivors": len(survivors), "min_num": p.m, "sampled": p.n},
            )
        for sid in sorted(needs):
            count = len(self.neighbours(sid, holders))
            if count < p.t:
                raise SecAggAbort(
                    stage.label,
                    f"client {sid} keeps fewer than t neighbours",
                    {
                        "client": sid,
                        "neighbours": count,
                        "threshold": p.t,
                        "survivors": len(survivors),
                    },
                )

    # -- stage 0 ----------------------------------------------------------------------------
    def setup_requests(self) -> dict[int, SetupRequest]:
        requests = {
            sid: SetupRequest(round_id=self.round_id, secure_id=sid, params=self.params)
            for sid in sorted(self.alive[Stage.SETUP])
        }
        self._setup_digests = {sid: setup_digest(r) for sid, r in requests.items()}
        return requests

    # -- stage 1 ----------------------------------------------------------------------------
    def receive_keys(self, replies: Mapping[int, AdvertiseKeys]) -> dict[int, ShareKeysRequest]:
        """Collect ``U1`` and send each client the keys of ``N(u) ∩ U1``."""
        self._advance(Stage.SETUP, Stage.ADVERTISE_KEYS)
        seen: set[bytes] = set()
        u1: set[int] = set()
        for sid in sorted(set(replies) & self.alive[Stage.SETUP]):
            reply = replies[sid]
            keys = (reply.c_pk, reply.s_pk)
            try:  # one client's invalid key would fail every neighbour's key agreement
                for key in keys:
                    check_public_key(key)
            except SecAggError as err:
                self.reject(sid, Stage.ADVERTISE_KEYS, str(err))
                continue
            if reply.round_id != self.round_id:
                self.reject(sid, Stage.ADVERTISE_KEYS, "wrong round id")
            elif reply.setup_digest != self._setup_digests.get(sid):
                self.reject(sid, Stage.ADVERTISE_KEYS, "answers other setup parameters")
            elif keys[0] == keys[1] or seen & set(keys):
                self.reject(sid, Stage.ADVERTISE_KEYS, "public key repeats another one")
            else:
                seen.update(keys)
                self.c_pks[sid], self.s_pks[sid] = keys
                u1.add(sid)
        self.alive[Stage.ADVERTISE_KEYS] = u1
        self._check(Stage.ADVERTISE_KEYS, u1, u1, u1)
        requests = {}
        for sid in sorted(u1):
            ids = self.neighbours(sid, u1)
            requests[sid] = ShareKeysRequest(
                round_id=self.round_id,
                ids=tuple(ids),
                indices=tuple(self.graph[sid].index(v) + 1 for v in ids),
                c_pks=tuple(self.c_pks[v] for v in ids),
                s_pks=tuple(self.s_pks[v] for v in ids),
            )
        return requests

    # -- stage 2 ----------------------------------------------------------------------------
    def receive_share_keys(
        self, replies: Mapping[int, ShareKeysReply]
    ) -> dict[int, MaskedInputRequest]:
        """Collect ``U2`` and route each ciphertext to its destination in ``U2``."""
        self._advance(Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS)
        u1 = self.alive[Stage.ADVERTISE_KEYS]
        u2: set[int] = set()
        for sid in sorted(set(replies) & u1):
            reply = replies[sid]
            expected = set(self.neighbours(sid, u1)) - {sid}
            if reply.round_id != self.round_id:
                self.reject(sid, Stage.SHARE_KEYS, "wrong round id")
            elif set(reply.dsts) != expected or len(reply.dsts) != len(expected):
                self.reject(sid, Stage.SHARE_KEYS, "destinations are not N(u) ∩ U1")
            elif len(reply.ciphertexts) != len(reply.dsts) or len(reply.commitment) != 32:
                self.reject(sid, Stage.SHARE_KEYS, "malformed ciphertext list or commitment")
            else:
                u2.add(sid)
                self.commitments[sid] = reply.commitment
        self.alive[Stage.SHARE_KEYS] = u2
        self._check(Stage.SHARE_KEYS, u2, u2, u2)
        # Only shares between two survivors of U2 travel on: nobody masks with a client that
        # dropped here, so its shares are never needed (dropouts at this stage cost nothing).
        self._inbox = {sid: [] for sid in u2}
        for src in sorted(u2):
            reply = replies[src]
            for dst, sealed in zip(reply.dsts, reply.ciphertexts, strict=True):
                if dst in u2:
                    self._inbox[dst].append((src, sealed))
        requests = {
            sid: MaskedInputRequest(
                round_id=self.round_id,
                srcs=tuple(src for src, _ in box),
                ciphertexts=tuple(sealed for _, sealed in box),
            )
            for sid, box in self._inbox.items()
        }
        self._inbox = {}
        return requests

    # -- stage 3 ----------------------------------------------------------------------------
    def add_masked_input(self, sid: int, reply: MaskedInputReply) -> None:
        """Accumulate one masked vector (mod M) as it arrives; malformed ones are dropouts."""
        if self.stage != Stage.SHARE_KEYS:
            raise SecAggError(f"masked input received after {self.stage.label}")
        if sid not in self.alive[Stage.SHARE_KEYS] or sid in self._masked_from:
            self.reject(sid, Stage.MASKED_INPUT, "not expected (not in U2, or a repeat)")
            return
        p = self.params
        if reply.round_id != self.round_id:
            self.reject(sid, Stage.MASKED_INPUT, "wrong round id")
            return
        if reply.length < 1 or (
            self.expected_length is not None and reply.length != self.expected_length
        ):
            self.reject(sid, Stage.MASKED_INPUT, f"length {reply.length} != {self.expected_length}")
            return
        try:
            vector = masks.unpack(reply.masked, reply.length, p.mod_bits, p.dtype)
        except ValueError as err:
            self.reject(sid, Stage.MASKED_INPUT, str(err))
            return
        if self._sum is None:
            self.expected_length = reply.length
            self._sum = vector
        else:
            np.add(self._sum, vector, out=self._sum)
        self._masked_from.add(sid)
        if 0.0 <= reply.clipped_fraction <= 1.0:
            self.clipped_fraction[sid] = float(reply.clipped_fraction)
        elif reply.clipped_fraction != -1.0:  # -1: not reported
            self.reject(sid, Stage.MASKED_INPUT, "clipped fraction outside [0, 1] ignored")

    def receive_masked_inputs(
        self, replies: Mapping[int, MaskedInputReply] | None = None
    ) -> dict[int, UnmaskRequest]:
        """Close stage 3 (``U3``) and ask each survivor for the shares to unmask."""
        for sid, reply in sorted((replies or {}).items()):
            self.add_masked_input(sid, reply)
        self._advance(Stage.SHARE_KEYS, Stage.MASKED_INPUT)
        u2 = self.alive[Stage.SHARE_KEYS]
        u3 = set(self._masked_from)
        self.alive[Stage.MASKED_INPUT] = u3
        late = {v for v in u2 - u3 if self.neighbours(v, u3)}
        self._check(Stage.MASKED_INPUT, u3, u3 | late, u3)
        return {
            sid: UnmaskRequest(
                round_id=self.round_id,
                alive=tuple(self.neighbours(sid, u3)),
                dropped=tuple(self.neighbours(sid, u2 - u3)),
            )
            for sid in sorted(u3)
        }

    # -- stage 4 ----------------------------------------------------------------------------
    def receive_unmask(self, replies: Mapping[int, UnmaskReply]) -> AggregateResult:
        """Reconstruct ``b_v`` (v ∈ U3) and ``s_SK_v`` (v ∈ U2 \\ U3), remove the masks,
        check the sum's range and dequantize; any failure is a :class:`SecAggAbort`."""
        self._advance(Stage.MASKED_INPUT, Stage.UNMASK)
        p = self.params
        u2, u3 = self.alive[Stage.SHARE_KEYS], self.alive[Stage.MASKED_INPUT]
        late = {v for v in u2 - u3 if self.neighbours(v, u3)}
        table = self._collect_unmask(replies, u3, u2 - u3)
        u4 = self.alive[Stage.UNMASK]
        self._check(Stage.UNMASK, u4, set(), u4)
        for kind, owners, shares in (
            ("self-mask seed", u3, table.b),
            ("mask key", late, table.s),
        ):
            for owner in sorted(owners):
                count = len(shares.get(owner, {}))
                if count < p.t:
                    raise SecAggAbort(
                        Stage.UNMASK.label,
                        f"too few shares of the {kind} of client {owner}",
                        {"client": owner, "shares": count, "threshold": p.t, "survivors": len(u4)},
                    )
        assert self._sum is not None  # u3 is non-empty (checked against m >= 2)
        total = self._sum
        unmasking = Unmasking(
            params=p,
            graph=self.graph,
            round_id=self.round_id,
            commitments=self.commitments,
            s_pks=self.s_pks,
            suspects=self._suspects,
            note=lambda sid, reason: self.reject(sid, Stage.UNMASK, reason),
        )
        unmasking.remove_self_masks(total, u3, table)
        unmasking.remove_pair_masks(total, late, u3, table)
        if p.mod_bits < 8 * total.dtype.itemsize:
            np.bitwise_and(total, total.dtype.type(p.modulus - 1), out=total)
        self._sum = None
        violation = sum_violation(total, p, len(u3))
        if violation:
            raise SecAggAbort(Stage.UNMASK.label, violation, {"survivors": len(u3)})
        dropped = {
            Stage.ADVERTISE_KEYS.label: self.alive[Stage.SETUP] - self.alive[Stage.ADVERTISE_KEYS],
            Stage.SHARE_KEYS.label: self.alive[Stage.ADVERTISE_KEYS] - u2,
            Stage.MASKED_INPUT.label: u2 - u3,
            Stage.UNMASK.label: u3 - u4,
        }
        return AggregateResult(
            total=total,
            mean=dequantize_mean(total, p),
            survivors=tuple(sorted(u3)),
            dropped={k: tuple(sorted(v)) for k, v in dropped.items()},
            clipped_fraction={k: v for k, v in self.clipped_fraction.items() if k in u3},
        )

    def _collect_unmask(
        self, replies: Mapping[int, UnmaskReply], u3: set[int], dropped: set[int]
    ) -> ShareTable:
        """Read every survivor's reply into a share table; sets ``U4`` (accepted repliers)."""
        table = ShareTable()
        u4: set[int] = set()
        for sid in sorted(set(replies) & u3):
            reply = replies[sid]
            if reply.round_id != self.round_id:
                self.reject(sid, Stage.UNMASK, "wrong round id")
                continue
            refusal, notes = read_unmask_reply(
                self.graph,
                sid,
                reply,
                set(self.neighbours(sid, u3)),
                set(self.neighbours(sid, dropped)),
                table,
            )
            for note in notes:
                self.reject(sid, Stage.UNMASK, note)
            if refusal:
                self.reject(sid, Stage.UNMASK, refusal)
            else:
                u4.add(sid)
        self.alive[Stage.UNMASK] = u4
        return table
