"""Errors of the DRACO decoders: the received messages do not determine the exact sum.

Every decoder either returns the exact sum ``G·1_P`` (dissertation Definition 6.3, section 6.2)
or raises a :class:`DecodingError`; it never returns an aggregate it could not verify. A
``DecodingError`` means the round must be skipped (spec ``draco.md`` section 7.5): more than
``s`` nodes were adversarial, failed or missing, or the messages are inconsistent with the code.

All are ``ValueError`` subclasses, so callers that already treat bad inputs as ``ValueError``
keep working; catch :class:`DecodingError` to tell "skip this round" from a programming error.
"""

from __future__ import annotations

from collections.abc import Iterable


class DecodingError(ValueError):
    """The messages of one round cannot be decoded to the exact sum (skip the round)."""


class TooManyAdversariesError(DecodingError):
    """More than ``s`` nodes are known bad: erased by screening, or disagreeing in a vote.

    ``suspects`` holds those nodes (sorted), ``max_adversaries`` the code's ``s``.
    """

    def __init__(self, suspects: Iterable[int], max_adversaries: int, *, what: str) -> None:
        self.suspects = tuple(sorted(suspects))
        self.max_adversaries = max_adversaries
        super().__init__(
            f"{len(self.suspects)} nodes {list(self.suspects)} {what}, more than the "
            f"{max_adversaries} adversaries the code tolerates; the exact sum is not determined"
        )


class NoMajorityError(DecodingError):
    """Repetition code: a node group has no strict majority (Algorithm 5's counting pass failed).

    ``groups`` lists the indices of the groups without a majority.
    """

    def __init__(self, groups: Iterable[int]) -> None:
        self.groups = tuple(groups)
        super().__init__(
            f"node groups {list(self.groups)} have no strict majority of identical messages: "
            f"more adversaries than the code tolerates"
        )


class InconsistentMessagesError(DecodingError):
    """Cyclic code: no choice of ``s`` erased nodes leaves messages consistent with the code.

    ``residual`` is the smallest relative residual found, ``tolerance`` the bound it exceeds.
    """

    def __init__(self, residual: float, tolerance: float) -> None:
        self.residual = residual
        self.tolerance = tolerance
        super().__init__(
            f"the messages are inconsistent with the cyclic code after erasing the located "
            f"nodes (relative residual {residual:.3g} > tolerance {tolerance:.3g}): more "
            f"adversaries than the code tolerates"
        )
