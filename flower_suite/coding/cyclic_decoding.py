"""Decoder of DRACO's cyclic code: locate the adversaries, verify, recover the exact sum.

Dissertation section 6.2 (Algorithm 4, Lemmas 6.8-6.9, Theorem 6.10; proofs in sections
6.5.3-6.5.5) as corrected in spec ``draco.md`` section 4. Messages are rows ``(P, d)``
complex128 (the text's ``R`` transposed); ``N`` denotes the adversaries' perturbations.

1. **Project.** Draw ``f ~ N(1, I_d)`` *after* the messages arrived, from a source the nodes
   cannot predict (an adversary who knows ``f`` can perturb orthogonally to it), and compute
   ``y = f·R`` (``P`` numbers, ``O(dP)``). Since ``Z = X·C_L`` for some ``X``,
   ``y = x·C_L + γ`` with ``γ = f·N`` nonzero exactly on the adversaries (Lemma 6.13).
2. **Locate** (the function ``φ``, Lemma 6.9). ``y·C_Rᴴ = γ·C_Rᴴ`` (Lemma 6.14) gives the ``2s``
   DFT coefficients ``h[P−2s..P−1]`` of ``γ``. A sequence whose inverse DFT has ``e`` nonzeros
   satisfies a linear recurrence of order ``e`` (Lemma 6.15): solve for its coefficients
   ``β`` by least squares, extend ``h`` to all ``P`` frequencies, and ``t = C·h = γ``.
   Messages more than :data:`OUTLIER_NORM_RATIO` times the median norm are erased first:
   their rounding errors would swamp the syndromes of the other adversaries.
3. **Erase** ``V``: the screened nodes plus the nodes with the largest ``|t_j|``, ``s`` in all.
   Erasing honest nodes too is harmless (recovery needs only ``P − 2s`` honest ones) and needs
   no threshold on ``t`` (spec section 4 step 5).
4. **Verify** (beyond the text, spec section 8.8): the kept ``y[U]`` must be a codeword, i.e. lie
   in the row space of ``C_L[:, U]``. Its least-squares residual, relative to
   ``‖f‖ · max_{j ∈ U} ‖z_j‖`` (the size of ``y[U]``'s rounding errors; over the kept nodes
   only, so an excluded adversary cannot loosen the test by sending a huge message), must be
   at most ``tolerance``.
   Within ``s`` adversaries this holds up to rounding; if it fails, the locator is retried with
   recurrences of order ``s − 1, …, 1`` (with fewer than ``s`` adversaries the order-``s``
   system is singular and its least-squares solution can fit rounding noise), and if every
   order fails, :class:`~flower_suite.coding.errors.InconsistentMessagesError` is raised.
5. **Recover** (Algorithm 4): the min-norm ``b`` with ``C_L[:, U]·b = e_{P−2s}``, then
   ``u = Re(Σ_{j ∈ U} b_j z_j) = G·1_P`` because ``W[:, U]·b = 1_P`` (Lemma 6.8).

Steps 1 and 5 cost ``O(dP)``; 2-4 cost ``O(s·P³)``, independent of ``d`` (Theorem 6.10).

What is guaranteed: with at most ``s`` bad nodes (screened + adversarial), ``total`` equals
``G·1_P`` up to rounding (relative error below 1e-10 measured for ``P <= 31``). Beyond ``s`` a
``DecodingError`` is raised whenever the perturbations are not consistent with another codeword,
with probability 1 over ``f`` (measured: every constant, reverse-gradient and Gaussian attack of
``s + 1`` nodes when ``s < (P − 1)/2``). It cannot be guaranteed: the code has minimum distance
``2s + 1``, so ``s + 1`` colluding adversaries who know the honest messages can send the
codeword of a different sum, off by ``s`` honest nodes, and no decoder can tell which side is
honest; at ``s = (P − 1)/2`` every node sends the same vector and ``s + 1`` identical messages
suffice.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from flower_suite.coding.cyclic import CyclicCode
from flower_suite.coding.errors import InconsistentMessagesError
from flower_suite.coding.screening import (
    Array,
    ComplexArray,
    FloatArray,
    Screening,
    as_message_matrix,
    check_adversary_budget,
    screen_rows,
)

OUTLIER_NORM_RATIO = 1e6
"""Messages with a norm above this many times the median are erased before locating (they
count toward ``s``). Why: every syndrome mixes all ``P`` projections, so one message 1e150
times larger than the rest leaves rounding errors that hide a second, ordinary adversary from
the locator. A million is far above the spread of honest norms (the columns of ``W`` all have
the same norm, so honest norms differ only as much as the partition gradients do)."""

DEFAULT_TOLERANCE = 1e-12
"""Relative residual (to ``‖f‖ · max_j ‖z_j‖``) below which messages count as consistent.
Measured within the bound: at most about 1e-15 for ``P <= 31``; beyond it, Gaussian
perturbations of ``1e-3`` per coordinate left residuals of 1e-10 and more at ``P <= 21``."""


@dataclass(frozen=True)
class CyclicDecoding:
    """The decoded round (:func:`decode_cyclic`).

    ``total``: ``G·1_P``, float64 ``(d,)``. ``located``: the nodes known to be bad, sorted:
    the screened ones and those whose projected message deviates from the codeword the kept
    nodes agree on by more than the tolerance. ``excluded``: the ``s`` nodes left out of the
    recovery (``V``, a superset of ``located``). ``residual``: the relative consistency residual
    of the kept nodes. ``imaginary_part``: ``‖Im(Σ b_j z_j)‖ / Σ |b_j| ‖z_j‖``, zero up to
    rounding for honest messages (a diagnostic). ``locator_order``: the recurrence order that
    passed (0 when nothing had to be located).
    """

    total: FloatArray
    located: tuple[int, ...]
    excluded: tuple[int, ...]
    residual: float
    imaginary_part: float
    locator_order: int
    screening: Screening


def draw_locator_vector(dimension: int, rng: np.random.Generator | None = None) -> FloatArray:
    """``f ~ N(1, I_d)`` (section 6.2). Without ``rng``, seeded from :mod:`secrets`, so no node
    can predict it (spec section 1); pass a generator only for reproducible tests."""
    generator = rng if rng is not None else np.random.default_rng(secrets.randbits(128))
    return generator.standard_normal(dimension) + 1.0


def project_messages(matrix: np.ndarray, f: FloatArray, rows: Sequence[int]) -> ComplexArray:
    """``y_j = z_j · f`` for ``j`` in ``rows``, 0 for the other (erased) rows, never read.

    One matrix-vector product per run of consecutive rows: no ``(P, d)`` copy, and erased rows
    (which may hold NaN) are skipped.
    """
    projection = np.zeros(matrix.shape[0], dtype=np.complex128)
    f_complex = f.astype(np.complex128)
    for start, stop in _runs(rows):
        projection[start:stop] = matrix[start:stop] @ f_complex
    return projection


def locate_errors(code: CyclicCode, projection: ComplexArray, order: int) -> ComplexArray:
    """``t``, the estimate of ``γ = f·N`` from the ``2s`` syndromes (the locator ``φ``).

    ``order``: the recurrence order ``e`` (``1 <= e <= s``), the number of adversaries assumed.
    ``h[ℓ] = Σ_{u<e} β_u h[ℓ − e + u]`` is fitted by least squares to the ``2s − e`` equations
    inside the known window ``ℓ = P − 2s + e .. P − 1`` (for ``e = s`` the text's ``T·β = v``),
    then run forward for ``ℓ = 0 .. P − 2s − 1`` (indices mod ``P``), and ``t = C·h``.
    """
    p, s = code.num_nodes, code.max_adversaries
    if not 1 <= order <= s:
        raise ValueError(f"order must be in [1, s={s}], got {order}")
    spectrum = np.zeros(p, dtype=np.complex128)
    spectrum[p - 2 * s :] = projection @ code.upper_fourier.conj().T
    known = range(p - 2 * s + order, p)
    system = np.array([[spectrum[ell - order + u] for u in range(order)] for ell in known])
    targets = spectrum[list(known)]
    recurrence = np.linalg.lstsq(system, targets, rcond=None)[0]
    for ell in range(p - 2 * s):
        previous = spectrum[[(ell - order + u) % p for u in range(order)]]
        spectrum[ell] = recurrence @ previous
    return code.fourier @ spectrum


def codeword_deviation(
    code: CyclicCode, projection: ComplexArray, kept: Sequence[int]
) -> tuple[float, FloatArray]:
    """Least-squares fit of ``y[kept] ≈ x·C_L[:, kept]``: the residual norm on ``kept`` and
    ``|y_j − (x·C_L)_j|`` for every node (an estimate of ``|γ_j|`` for the excluded ones)."""
    lower = code.lower_fourier
    coefficients = np.linalg.lstsq(lower[:, kept].T, projection[kept], rcond=None)[0]
    deviation = np.abs(projection - coefficients @ lower)
    return float(np.linalg.norm(deviation[kept])), deviation


def recovery_vector(code: CyclicCode, kept: Sequence[int]) -> ComplexArray:
    """The min-norm ``b`` with ``C_L[:, kept]·b = e_{P−2s}`` (Algorithm 4, Lemma 6.8), so that
    ``Σ_{j ∈ kept} b_j z_j = G·1_P`` for honest messages."""
    lower = code.lower_fourier
    unit = np.zeros(lower.shape[0], dtype=np.complex128)
    unit[-1] = 1.0
    return np.asarray(np.linalg.lstsq(lower[:, kept], unit, rcond=None)[0], dtype=np.complex128)


def decode_cyclic(
    code: CyclicCode,
    messages: Array,
    *,
    erased: Iterable[int] = (),
    max_norm: float | None = None,
    max_norm_ratio: float | None = OUTLIER_NORM_RATIO,
    tolerance: float = DEFAULT_TOLERANCE,
    rng: np.random.Generator | None = None,
) -> CyclicDecoding:
    """Decode one round: ``G·1_P`` from the ``(P, d)`` complex messages (module docstring).

    Parameters
    ----------
    code : CyclicCode
    messages : array or tensor
        ``(P, d)`` complex messages, row ``j`` from node ``j`` (cast to complex128).
    erased : iterable of int
        Nodes known to be bad (missing replies, failures); non-finite rows, rows above
        ``max_norm`` and rows above ``max_norm_ratio`` times the median norm
        (:data:`OUTLIER_NORM_RATIO`) are added
        (:func:`~flower_suite.coding.screening.screen_rows`).
    tolerance : float
        Consistency bound on the relative residual (:data:`DEFAULT_TOLERANCE`).
    rng : numpy Generator, optional
        Source of ``f``; default a fresh generator seeded from :mod:`secrets`.

    Raises
    ------
    TooManyAdversariesError
        More than ``s`` nodes erased by the caller or the screen.
    InconsistentMessagesError
        No ``s`` erasures leave consistent messages: more than ``s`` adversaries.
    ValueError
        ``messages`` is not ``(P, d)``, or an erased index is out of range.
    """
    matrix = as_message_matrix(messages, complex_valued=True)
    p, s = code.num_nodes, code.max_adversaries
    if matrix.shape[0] != p:
        raise ValueError(f"expected {p} messages (rows), got {matrix.shape[0]}")
    if not (math.isfinite(tolerance) and tolerance > 0):
        raise ValueError(f"tolerance must be finite and > 0, got {tolerance}")
    screening = screen_rows(matrix, erased=erased, max_norm=max_norm, max_norm_ratio=max_norm_ratio)
    check_adversary_budget(screening.erased, s, what="were erased (missing, failed, non-finite)")
    bad = set(screening.erased)
    usable = [j for j in range(p) if j not in bad]
    f = draw_locator_vector(matrix.shape[1], rng)
    projection = project_messages(matrix, f, usable)
    scales = _norm(f) * screening.row_norms
    excluded, residual, deviation, order = _erase_and_verify(
        code, projection, bad, scales, tolerance
    )
    if residual > tolerance:
        raise InconsistentMessagesError(residual, tolerance)
    kept = [j for j in range(p) if j not in set(excluded)]
    scale = _kept_scale(scales, kept)
    coefficients = recovery_vector(code, kept)
    combination = _combine_rows(matrix, kept, coefficients)
    weight = float(np.abs(coefficients) @ screening.row_norms[kept])
    imaginary = _norm(combination.imag) / weight if weight > 0 else 0.0
    located = bad | {j for j in excluded if deviation[j] > tolerance * scale}
    return CyclicDecoding(
        total=np.ascontiguousarray(combination.real),
        located=tuple(sorted(located)),
        excluded=excluded,
        residual=residual,
        imaginary_part=imaginary,
        locator_order=order,
        screening=screening,
    )


def _erase_and_verify(
    code: CyclicCode, projection: ComplexArray, bad: set[int], scales: FloatArray, tolerance: float
) -> tuple[tuple[int, ...], float, FloatArray, int]:
    """Steps 2-4: the erased set ``V`` whose complement is consistent, its relative residual,
    every node's deviation from the fitted codeword, and the locator order that found it.

    The residual is relative to ``‖f‖ · max_{j ∈ U} ‖z_j‖`` over the *kept* nodes only
    (``scales[j] = ‖f‖ ‖z_j‖``): an excluded adversary must not be able to inflate the
    tolerance by sending a huge message, and a kept one that does so is inconsistent by about
    ``1/√d`` of its own size, far above any tolerance.

    ``γ`` is nonzero on the screened nodes too (their projection is set to 0), so the orders
    ``s, s − 1, …, 1`` are tried, each erasing ``bad`` plus the largest ``|t_j|`` up to ``s``
    nodes, then order 0 (erase only ``bad``); the first consistent one is returned, else the
    least inconsistent (which the caller rejects).
    """
    p, s = code.num_nodes, code.max_adversaries
    best: tuple[tuple[int, ...], float, FloatArray, int] | None = None
    orders = range(s, -1, -1) if len(bad) < s else (0,)
    for order in orders:
        if order == 0:
            excluded = tuple(sorted(bad))
        else:
            magnitude = np.abs(locate_errors(code, projection, order))
            magnitude[list(bad)] = np.inf  # always erased
            excluded = tuple(sorted(int(j) for j in np.argsort(-magnitude, kind="stable")[:s]))
        kept = [j for j in range(p) if j not in set(excluded)]
        residual, deviation = codeword_deviation(code, projection, kept)
        candidate = (excluded, residual / _kept_scale(scales, kept), deviation, order)
        if best is None or candidate[1] < best[1]:
            best = candidate
        if candidate[1] <= tolerance:
            return candidate
    assert best is not None
    return best


def _kept_scale(scales: FloatArray, kept: Sequence[int]) -> float:
    """``‖f‖ · max_{j ∈ kept} ‖z_j‖``, or 1 when every kept message is zero (then so is every
    codeword they form, and any absolute residual is a real inconsistency)."""
    largest = float(scales[list(kept)].max(initial=0.0))
    return largest if largest > 0 else 1.0


def _combine_rows(
    matrix: np.ndarray, rows: Sequence[int], coefficients: ComplexArray
) -> np.ndarray:
    """``Σ_i coefficients[i] · matrix[rows[i]]`` (complex128 ``(d,)``), one vector-matrix
    product per run of consecutive rows: no row is copied, and rows not listed are not read."""
    weights = dict(zip(rows, coefficients, strict=True))
    total = np.zeros(matrix.shape[1], dtype=np.complex128)
    for start, stop in _runs(rows):
        total += np.array([weights[j] for j in range(start, stop)]) @ matrix[start:stop]
    return total


def _norm(vector: np.ndarray) -> float:
    """Euclidean norm of a long real vector (possibly strided). einsum's own loop: BLAS's
    ``dnrm2``/``ddot`` wake their thread pool, which costs milliseconds on a busy machine, and
    ``np.linalg.norm`` copies strided input first."""
    return math.sqrt(float(np.einsum("i,i->", vector, vector)))


def _runs(rows: Sequence[int]) -> list[tuple[int, int]]:
    """Maximal ``[start, stop)`` ranges of consecutive indices covering the sorted ``rows``."""
    runs: list[tuple[int, int]] = []
    for j in sorted(rows):
        if runs and runs[-1][1] == j:
            runs[-1] = (runs[-1][0], j + 1)
        else:
            runs.append((j, j + 1))
    return runs
