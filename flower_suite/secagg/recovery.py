"""Stage 4 on the server: read the unmask replies, reconstruct secrets despite bad shares.

Spec ``secagg.md`` section 6, stage 4, hardened against one misbehaving party:

- The Shamir index of a share is the one the server assigned (the holder's position in the
  owner's neighbour list, :func:`~flower_suite.secagg.graph.share_index`), never the index a
  reply claims: a share relabelled to another index is discarded, and a reply naming an owner
  twice is refused as a whole, so a holder cannot make ``combine`` see duplicate indices.
- Combining ``t`` shares that include a wrong one gives a wrong secret, which the caller's
  check (commitment of ``b_v``, public key of ``s_SK_v``) rejects. :func:`recover_secret`
  then tries other ``t``-subsets of the spare shares, fewest replacements first, up to
  :data:`MAX_ATTEMPTS`; holders whose share had to be left out become suspects and are tried
  last for the next owners (one corrupt holder usually corrupts all its shares).

Nothing here raises on a client's bytes: problems come back as notes (holder, reason), and
:class:`Unmasking` turns a secret that cannot be recovered into a :class:`SecAggAbort`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from flower_suite.secagg import masks, shamir
from flower_suite.secagg.crypto import agree, private_key, public_key_of, seed_commitment
from flower_suite.secagg.errors import SecAggAbort
from flower_suite.secagg.graph import Graph, share_index
from flower_suite.secagg.messages import Stage, UnmaskReply
from flower_suite.secagg.params import SecAggParams

# Distinct t-subsets tried per secret before giving up (each costs one interpolation).
MAX_ATTEMPTS = 64

SEED_BYTES = 16
KEY_BYTES = 32


@dataclass
class ShareTable:
    """Shares received for each owner: ``owner -> {holder: (assigned index, share bytes)}``."""

    b: dict[int, dict[int, tuple[int, bytes]]] = field(default_factory=dict)
    s: dict[int, dict[int, tuple[int, bytes]]] = field(default_factory=dict)


def _read_shares(
    graph: Graph,
    holder: int,
    owners: Sequence[int],
    blobs: Sequence[bytes],
    size: int,
    notes: list[str],
) -> dict[int, tuple[int, bytes]]:
    """Decode one kind of share from one reply; a malformed or relabelled share is noted and
    left out (the others of the reply still count)."""
    out = {}
    for owner, blob in zip(owners, blobs, strict=True):
        try:
            claimed, share = shamir.decode_share(blob)
        except ValueError as err:
            notes.append(f"share of client {owner} discarded: {err}")
            continue
        assigned = share_index(graph, owner, holder)
        if claimed != assigned:
            notes.append(
                f"share of client {owner} discarded: it claims index {claimed}, the server "
                f"assigned {assigned}"
            )
        elif len(share) != size:
            notes.append(f"share of client {owner} discarded: {len(share)} bytes, not {size}")
        else:
            out[owner] = (assigned, share)
    return out


def read_unmask_reply(
    graph: Graph,
    holder: int,
    reply: UnmaskReply,
    wanted_b: set[int],
    wanted_s: set[int],
    table: ShareTable,
) -> tuple[str, list[str]]:
    """Add ``holder``'s shares to ``table``; returns ``(refusal, notes)``.

    A non-empty refusal means nothing of the reply was kept (wrong round handled by the
    caller; repeated owners, owners not asked for, mismatched lists). Notes describe shares
    left out of an accepted reply, including the ones the holder could not give because it
    discarded them at stage 3.
    """
    b_owners, s_owners = list(reply.b_owners), list(reply.s_owners)
    if len(b_owners) != len(reply.b_shares) or len(s_owners) != len(reply.s_shares):
        return "owners and shares differ in length", []
    if len(set(b_owners)) != len(b_owners) or len(set(s_owners)) != len(s_owners):
        return "the reply names an owner twice", []
    if not set(b_owners) <= wanted_b or not set(s_owners) <= wanted_s:
        return "shares for other clients than requested", []
    notes: list[str] = []
    b = _read_shares(graph, holder, b_owners, reply.b_shares, SEED_BYTES, notes)
    s = _read_shares(graph, holder, s_owners, reply.s_shares, KEY_BYTES, notes)
    missing = sorted((wanted_b - set(b_owners)) | (wanted_s - set(s_owners)))
    if missing:
        notes.append(f"no valid share of clients {missing} (discarded at stage 3, or withheld)")
    for owner, share in b.items():
        table.b.setdefault(owner, {})[holder] = share
    for owner, share in s.items():
        table.s.setdefault(owner, {})[holder] = share
    return "", notes


def candidate_subsets(holders: Sequence[int], t: int, limit: int) -> Iterator[tuple[int, ...]]:
    """Distinct ``t``-subsets of ``holders`` (in preference order): first the ``t`` preferred
    ones, then those replacing one of them by the next holder, then two, ... (at most
    ``limit`` subsets)."""
    seen: set[tuple[int, ...]] = set()
    for extra in range(len(holders) - t + 1):
        window = holders[: t + extra]
        for left_out in combinations(range(t + extra), extra):
            subset = tuple(h for i, h in enumerate(window) if i not in left_out)
            if subset in seen:
                continue
            seen.add(subset)
            yield subset
            if len(seen) >= limit:
                return


def recover_secret(
    shares: Mapping[int, tuple[int, bytes]],
    t: int,
    verify: Callable[[bytes], bool],
    suspects: set[int],
    limit: int = MAX_ATTEMPTS,
) -> tuple[bytes, list[int]] | None:
    """A secret from ``t`` of ``shares`` (``holder -> (index, share)``) that ``verify``
    accepts, and the preferred holders that had to be left out; ``None`` if no tried subset
    verifies.

    Holders are preferred by (not a suspect, smallest index): with honest holders the first
    subset is the ``t`` smallest indices, shared by most owners, so the cached Lagrange
    coefficients serve them all (``shamir.lagrange_at_zero``).
    """
    holders = sorted(shares, key=lambda h: (h in suspects, shares[h][0]))
    for subset in candidate_subsets(holders, t, limit):
        try:
            secret = shamir.combine(sorted(shares[h] for h in subset))
        except ValueError:
            continue
        if verify(secret):
            return secret, [h for h in holders[:t] if h not in subset]
    return None


@dataclass
class Unmasking:
    """Removes the masks from the sum of the masked inputs (spec section 6, stage 4).

    ``note(holder, reason)`` records a share left out; a secret that cannot be recovered is a
    :class:`SecAggAbort` naming its owner (the round cannot be completed without it).
    """

    params: SecAggParams
    graph: Graph
    round_id: bytes
    commitments: Mapping[int, bytes]  # owner -> H(round | owner | b_owner), from stage 2
    s_pks: Mapping[int, bytes]  # owner -> s_PK, from stage 1
    suspects: set[int]  # holders caught with an invalid share (tried last)
    note: Callable[[int, str], None]

    def recover(
        self,
        kind: str,
        owner: int,
        shares: dict[int, tuple[int, bytes]],
        verify: Callable[[bytes], bool],
    ) -> bytes:
        """One secret from its shares despite invalid ones, or a :class:`SecAggAbort`."""
        found = recover_secret(shares, self.params.t, verify, self.suspects)
        if found is None:
            raise SecAggAbort(
                Stage.UNMASK.label,
                f"no subset of the shares of client {owner}'s {kind} reconstructs a secret "
                "that matches its commitment (invalid shares, or a client that shared a "
                "secret other than the one it masked with)",
                {"client": owner, "shares": len(shares), "threshold": self.params.t},
            )
        secret, left_out = found
        self.suspects.update(left_out)
        for holder in left_out:
            self.note(
                holder,
                f"share of client {owner}'s {kind} left out (it or another left-out share is "
                "invalid)",
            )
        return secret

    def remove_self_masks(self, total: np.ndarray, u3: set[int], table: ShareTable) -> None:
        """Subtract ``PRG(b_v)`` for every survivor ``v`` (``b_v`` checked against ``H``)."""
        for owner in sorted(u3):

            def matches(seed: bytes, owner: int = owner) -> bool:
                return seed_commitment(self.round_id, owner, seed) == self.commitments[owner]

            seed = self.recover("self-mask seed", owner, table.b[owner], matches)
            masks.add_mask(
                total,
                seed,
                sign=-1,
                round_id=self.round_id,
                label=masks.self_mask_label(owner),
                mod_bits=self.params.mod_bits,
            )

    def remove_pair_masks(
        self, total: np.ndarray, late: set[int], u3: set[int], table: ShareTable
    ) -> None:
        """For each late dropout ``v`` (``s_SK_v`` checked against ``s_PK_v``), remove the
        pairwise masks its surviving neighbours added."""
        for owner in sorted(late):

            def matches(secret: bytes, owner: int = owner) -> bool:
                return public_key_of(secret) == self.s_pks[owner]

            key = private_key(self.recover("mask key", owner, table.s[owner], matches))
            for w in (v for v in self.graph[owner] if v in u3):
                # w added δ_wv PRG(s_wv) to y_w; v never sent y_v, so remove it
                masks.add_mask(
                    total,
                    agree(key, self.s_pks[w]),
                    sign=-masks.pair_sign(w, owner),
                    round_id=self.round_id,
                    label=masks.pair_mask_label(w, owner),
                    mod_bits=self.params.mod_bits,
                )
