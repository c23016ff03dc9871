"""Slow, obviously-correct references for ATOMO's probabilities (spec ``atomo.md`` §2.3).

Two independent routes to the optimum of Eq. 3.3, written for clarity, not speed:

- :func:`algorithm1_probabilities` is the spec's Algorithm 1 line by line (sorted input, budget
  decremented in place), with its edge cases (zero weights get 0, ``s >= nnz`` keeps all);
- :func:`kkt_probabilities` is the closed form of Eq. 3.21 searched by brute force: try
  ``n_s = 0, 1, 2, ...`` capped atoms and return the first assignment that is a valid
  probability vector.
"""

from __future__ import annotations

from fractions import Fraction


def algorithm1_probabilities(lam: list[float], s: float) -> list[float]:
    a = [abs(x) for x in lam]
    p = [0.0] * len(a)
    nz = [i for i in range(len(a)) if a[i] > 0]
    if s >= len(nz):
        for i in nz:
            p[i] = 1.0
        return p
    order = sorted(nz, key=lambda i: -a[i])  # sorted() is stable
    rem = s
    for idx, i in enumerate(order):
        tail = sum(a[j] for j in order[idx:])
        if a[i] * rem <= tail:
            for j in order[idx:]:
                p[j] = a[j] * rem / tail
            break
        p[i] = 1.0
        rem -= 1
    return p


def kkt_probabilities(lam: list[float], s: float) -> list[float]:
    a = [abs(x) for x in lam]
    nz = sorted((i for i in range(len(a)) if a[i] > 0), key=lambda i: -a[i])
    p = [0.0] * len(a)
    if s >= len(nz):
        for i in nz:
            p[i] = 1.0
        return p
    for n_s in range(len(nz)):
        rest = nz[n_s:]
        tail = sum(a[j] for j in rest)
        candidate = {j: a[j] * (s - n_s) / tail for j in rest}
        if all(v <= 1.0 + 1e-12 for v in candidate.values()):
            for j in nz[:n_s]:
                p[j] = 1.0
            for j, v in candidate.items():
                p[j] = min(v, 1.0)
            return p
    raise AssertionError("no feasible n_s: the budget must be below the number of atoms")


def exact_probabilities(lam: list[int], s: Fraction) -> list[Fraction]:
    """Algorithm 1 in exact rational arithmetic (for the golden vectors)."""
    a = [Fraction(abs(x)) for x in lam]
    p = [Fraction(0)] * len(a)
    nz = [i for i in range(len(a)) if a[i] > 0]
    if s >= len(nz):
        for i in nz:
            p[i] = Fraction(1)
        return p
    order = sorted(nz, key=lambda i: -a[i])
    rem = s
    for idx, i in enumerate(order):
        tail = sum(a[j] for j in order[idx:])
        if a[i] * rem <= tail:
            for j in order[idx:]:
                p[j] = a[j] * rem / tail
            break
        p[i] = Fraction(1)
        rem -= 1
    return p
