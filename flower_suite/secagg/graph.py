"""The neighbour graph: complete (SecAgg) or a randomly labelled Harary graph (SecAgg+).

Spec ``secagg.md`` section 3. For ``k < n`` the client ids are shuffled with a CSPRNG, placed on
a ring, and each is connected to its ``(k-1)/2`` predecessors and successors plus itself (the
construction of Google's implementation and Flower; Bell et al. 2020 analyse it). The graph is
fixed at stage 0 and never sent as a whole: each client learns only its own neighbours.

``neighbours[v]`` lists ``N(v)`` (``v`` included) in a canonical order; the 1-based position
of ``u`` in it is the Shamir index of the share of ``v``'s secrets that ``u`` holds. Positions
(rather than ids) keep indices in ``1..k``, so the responder index sets of different owners
often coincide and reconstruction reuses cached Lagrange coefficients.
"""

from __future__ import annotations

from flower_suite.secagg.crypto import RandomSource, shuffle

Graph = dict[int, tuple[int, ...]]


def build_graph(n: int, k: int, source: RandomSource) -> Graph:
    """Neighbour lists for secure ids ``1..n`` (``k = n``: complete; else odd ``k``)."""
    if not 3 <= k <= n:
        raise ValueError(f"num_shares (k) must satisfy 3 <= k <= n = {n}, got {k}")
    ids = list(range(1, n + 1))
    if k == n:
        full = tuple(ids)
        return dict.fromkeys(ids, full)
    if k % 2 == 0:
        raise ValueError(f"num_shares (k) must be odd when k < n, got {k}")
    shuffle(source, ids)
    half = (k - 1) // 2
    return {
        ids[p]: tuple(ids[(p + offset) % n] for offset in range(-half, half + 1)) for p in range(n)
    }


def share_index(graph: Graph, owner: int, holder: int) -> int:
    """Shamir index of ``holder``'s share of ``owner``'s secrets (1-based position)."""
    return graph[owner].index(holder) + 1
