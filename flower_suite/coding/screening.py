"""Input screening for the DRACO decoders: unusable node messages become known erasures.

Spec ``draco.md`` sections 7.5 and 10 ("non-finite or huge inputs"): a node whose message is
missing, has the wrong shape or dtype, contains NaN/Inf, or has a norm above a configured bound
is treated as an adversary at a *known* position (an erasure). The decoders never read such a
row, and erasures count toward the tolerance ``s``: the exact-recovery guarantee of
Definition 6.3 (dissertation section 6.2) holds while erasures + adversaries <= s.

Why screen at all: one NaN column makes every projection ``f·R`` NaN, which breaks the cyclic
code's locator (spec section 4, "Numerics"), and a NaN can never win a bitwise majority vote but
would still poison a sum.

Messages are rows: ``(P, d)`` with row ``j`` the message ``z_j`` of node ``j`` (the dissertation
uses the transposed ``d×P`` matrix ``R``). float64 for the repetition code, complex128 for the
cyclic code; inputs may be NumPy arrays or torch tensors (converted without a copy when they are
already CPU float64/complex128).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch

from flower_suite.coding.errors import TooManyAdversariesError

Array = np.ndarray | torch.Tensor
"""A message or a stack of messages: a NumPy array or a torch tensor."""

FloatArray = npt.NDArray[np.float64]
ComplexArray = npt.NDArray[np.complex128]

MISSING = "missing"
WRONG_SHAPE = "wrong shape"
WRONG_DTYPE = "wrong dtype"
NON_FINITE = "non-finite"
NORM_ABOVE_BOUND = "norm above bound"
NORM_ABOVE_MEDIAN = "norm far above the median"
ERASED_BY_CALLER = "erased by caller"


@dataclass(frozen=True)
class Screening:
    """Which nodes the decoder must ignore, and why.

    ``erased``: sorted node indices; ``reasons``: node -> one of the reason strings of this
    module; ``row_norms``: ``(P,)`` float64 Euclidean norms of the messages (0 for erased rows).
    """

    erased: tuple[int, ...]
    reasons: Mapping[int, str] = field(default_factory=dict)
    row_norms: FloatArray = field(default_factory=lambda: np.zeros(0))


@dataclass(frozen=True)
class StackedReplies:
    """Per-node replies stacked into one ``(P, d)`` message matrix (:func:`stack_replies`).

    Rows of unusable replies are zero and listed in ``erased`` with their ``reasons``; pass
    ``messages`` and ``erased`` to a decoder.
    """

    messages: np.ndarray
    erased: tuple[int, ...]
    reasons: Mapping[int, str]


def as_message_matrix(messages: Array, *, complex_valued: bool) -> np.ndarray:
    """``(P, d)`` C-contiguous float64 (or complex128) NumPy view of ``messages``; a copy only
    if needed.

    Raises ``ValueError`` unless ``messages`` is 2-D, and for complex input when real messages
    are expected (silently dropping an imaginary part would hide a protocol error).
    """
    matrix = to_numpy(messages, complex_valued=complex_valued)
    if matrix is None:
        raise ValueError("messages must be real (float64) for this code, got complex values")
    if matrix.ndim != 2:
        raise ValueError(f"messages must be a 2-D (P, d) array, got shape {matrix.shape}")
    return np.ascontiguousarray(matrix)


def screen_rows(
    messages: np.ndarray,
    *,
    erased: Iterable[int] = (),
    max_norm: float | None = None,
    max_norm_ratio: float | None = None,
) -> Screening:
    """Find the rows of ``messages`` a decoder must not use (no copy, nothing modified).

    A row is erased when the caller says so (``erased``: missing replies, failures), when its
    squared norm is not finite (NaN or Inf entries, or entries beyond ~1e154 whose squares
    overflow float64: no honest gradient is that large, and the decoders' arithmetic would
    overflow), when its norm exceeds ``max_norm``, or when it exceeds ``max_norm_ratio`` times
    the median norm of the rows kept so far. The median is set by the honest majority
    (``s < P/2``), so an adversary cannot move it; the ratio bound stops one huge message from
    drowning the others in its rounding errors (the cyclic decoder's projections mix all rows).
    One pass over the messages.
    """
    num_nodes = messages.shape[0]
    reasons = {_node_index(j, num_nodes): ERASED_BY_CALLER for j in erased}
    for name, bound in (("max_norm", max_norm), ("max_norm_ratio", max_norm_ratio)):
        if bound is not None and not (bound > 0):  # also rejects NaN
            raise ValueError(f"{name} must be > 0 or None, got {bound}")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is what we look for
        norms = np.sqrt(_row_squared_norms(messages))
    for j in range(num_nodes):
        if j in reasons:
            continue
        if not math.isfinite(norms[j]):
            reasons[j] = NON_FINITE
        elif max_norm is not None and norms[j] > max_norm:
            reasons[j] = NORM_ABOVE_BOUND
    if max_norm_ratio is not None:
        kept = [j for j in range(num_nodes) if j not in reasons]
        median = float(np.median(norms[kept])) if kept else 0.0
        for j in kept:
            if median > 0 and norms[j] > max_norm_ratio * median:
                reasons[j] = NORM_ABOVE_MEDIAN
    norms[list(reasons)] = 0.0
    return Screening(tuple(sorted(reasons)), reasons, norms)


def stack_replies(
    replies: Mapping[int, Array | None],
    *,
    num_nodes: int,
    dimension: int,
    complex_valued: bool = False,
) -> StackedReplies:
    """Stack per-node replies, keyed by node index (any arrival order), into ``(P, d)``.

    A node absent from ``replies`` (or mapped to None) is ``missing``; a reply that is not a
    1-D vector of ``dimension`` entries is ``wrong shape``; a complex reply where real ones are
    expected is ``wrong dtype``. Their rows are zero and they are erased. Non-finite values are
    left for :func:`screen_rows` (which every decoder runs). A key outside ``[0, num_nodes)``
    is a programming error (the server, not the node, assigns indices): ``ValueError``.
    """
    dtype = np.complex128 if complex_valued else np.float64
    stacked = np.zeros((num_nodes, dimension), dtype=dtype)
    reasons: dict[int, str] = {}
    for key in replies:
        _node_index(key, num_nodes)
    for j in range(num_nodes):
        reply = replies.get(j)
        if reply is None:
            reasons[j] = MISSING
            continue
        vector = to_numpy(reply, complex_valued=complex_valued)
        if vector is None:
            reasons[j] = WRONG_DTYPE
        elif vector.shape != (dimension,):
            reasons[j] = WRONG_SHAPE
        else:
            stacked[j] = vector
    return StackedReplies(stacked, tuple(sorted(reasons)), reasons)


def check_adversary_budget(suspects: Iterable[int], max_adversaries: int, *, what: str) -> None:
    """Raise :class:`TooManyAdversariesError` when more than ``s`` nodes are known bad."""
    suspects = tuple(suspects)
    if len(suspects) > max_adversaries:
        raise TooManyAdversariesError(suspects, max_adversaries, what=what)


def _row_squared_norms(messages: np.ndarray) -> FloatArray:
    """``Σ_i |z_ji|²`` per row. einsum's own loop rather than BLAS: one call for all rows, and
    its speed does not collapse when BLAS threads compete for a busy machine's cores."""
    if messages.shape[1] == 0:
        return np.zeros(messages.shape[0], dtype=np.float64)
    if np.iscomplexobj(messages):  # |z|² = re² + im², on strided views (no copy)
        real, imag = messages.real, messages.imag
        return np.einsum("ij,ij->i", real, real) + np.einsum("ij,ij->i", imag, imag)
    return np.einsum("ij,ij->i", messages, messages)


def to_numpy(values: Array, *, complex_valued: bool) -> np.ndarray | None:
    """float64 (or complex128) NumPy array of ``values``, without a copy when it already is one;
    None for complex values when real ones are expected."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        if values.is_complex() and not complex_valued:
            return None
        values = values.to(torch.complex128 if complex_valued else torch.float64).numpy()
    array = np.asarray(values)
    if np.iscomplexobj(array) and not complex_valued:
        return None
    return np.asarray(array, dtype=np.complex128 if complex_valued else np.float64)


def _node_index(raw: object, num_nodes: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | np.integer) or not 0 <= raw < num_nodes:
        raise ValueError(f"node index {raw!r} is not an integer in [0, {num_nodes})")
    return int(raw)
