"""Compressors with one interface: a dict of named tensors -> a dict of messages, and back.

Each compressor declares its contract once (:class:`CompressorContract`: what it does, whether
it is unbiased, its parameters with their ranges, its per-tensor byte formula and the message
kinds it sends) and implements, per tensor, :meth:`Compressor.sample` (the random message),
:meth:`Compressor.expected_bytes` and :meth:`Compressor.variance` (``E‖ĝ - g‖²``, exact).
:meth:`Compressor.compress` and :meth:`Compressor.decompress` are shared: tensors are visited in
sorted name order, all draws come from the one ``torch.Generator`` passed in, and decoding
accepts only the kinds the compressor sends, for exactly the names and layouts expected.

Tensors that are not floating point are always sent dense.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch

from flower_suite.compression.codec import Message, decode, encode
from flower_suite.compression.entrywise import flat_float64, sample_entrywise
from flower_suite.compression.probabilities import (
    atomic_variance,
    atomo_probabilities,
    check_budget,
)
from flower_suite.compression.quantizers import (
    lq_quantize,
    qsgd_levels,
    qsgd_quantize,
    qsgd_variance,
    terngrad_quantize,
)
from flower_suite.compression.spectral import (
    sample_spectral,
    spectral_decomposition,
    spectral_matrix,
    spectral_matrix_shape,
)
from flower_suite.compression.wire_format import (
    CodecError,
    MessageKind,
    dense_message_bytes,
    header_bytes,
    qsgd_message_bytes,
    spectral_message_bytes,
    support_bytes,
)

__all__ = [
    "Compressor",
    "CompressorContract",
    "EntrywiseAtomo",
    "LqQuantization",
    "NoCompression",
    "Qsgd",
    "SpectralAtomo",
    "TensorLayout",
    "TernGrad",
    "layouts_of",
]


@dataclass(frozen=True)
class CompressorContract:
    """What a compressor declares about itself (read by configs, benchmarks and tests)."""

    summary: str
    unbiased: bool
    parameters: Mapping[str, str]  # constructor parameter -> meaning and range
    bytes_formula: str  # bytes of one floating-point tensor's message (n entries)
    kinds: frozenset[MessageKind]  # what it sends, hence all its decoder accepts


class TensorLayout(NamedTuple):
    """What the receiver expects a message to decode to."""

    shape: tuple[int, ...]
    dtype: torch.dtype


def layouts_of(tensors: Mapping[str, torch.Tensor]) -> dict[str, TensorLayout]:
    """The layout of each tensor (e.g. of the model the server sent)."""
    return {name: TensorLayout(tuple(t.shape), t.dtype) for name, t in tensors.items()}


def _entrywise_expected_bytes(shape: tuple[int, ...], num_exact: int, signed: float) -> float:
    """The ENTRYWISE size formula at an expected number of signed entries (smooth in it)."""
    n = math.prod(shape)
    exact = support_bytes(num_exact, n) + 4 * num_exact
    return header_bytes(len(shape)) + 12 + exact + min(4 * signed, n / 8) + signed / 8


class Compressor(abc.ABC):
    """A (usually random) map from a tensor to a message, and the strict way back."""

    contract: ClassVar[CompressorContract]

    @abc.abstractmethod
    def sample(self, tensor: torch.Tensor, generator: torch.Generator) -> Message:
        """The message for one floating-point tensor (a dense tensor, or a sample)."""

    @abc.abstractmethod
    def expected_bytes(self, tensor: torch.Tensor) -> float:
        """Expected message length for this tensor (the contract's formula at E[K])."""

    @abc.abstractmethod
    def variance(self, tensor: torch.Tensor) -> float:
        """``E‖decoded - tensor‖²`` in exact arithmetic (wire rounding to float32 aside)."""

    def compress_tensor(self, tensor: torch.Tensor, generator: torch.Generator) -> bytes:
        if not tensor.is_floating_point():
            return encode(tensor)
        return encode(self.sample(tensor, generator))

    def decompress_tensor(self, data: bytes, layout: TensorLayout) -> torch.Tensor:
        kinds = self.contract.kinds if layout.dtype.is_floating_point else {MessageKind.DENSE}
        return decode(data, layout.shape, layout.dtype, kinds=kinds)

    def compress(
        self, tensors: Mapping[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, bytes]:
        """One message per tensor, drawing from ``generator`` in sorted name order."""
        return {name: self.compress_tensor(tensors[name], generator) for name in sorted(tensors)}

    def decompress(
        self, payload: Mapping[str, bytes], layouts: Mapping[str, TensorLayout]
    ) -> dict[str, torch.Tensor]:
        """The tensors, if ``payload`` has exactly one valid message per expected name."""
        missing, extra = set(layouts) - set(payload), set(payload) - set(layouts)
        if missing or extra:
            raise CodecError(
                f"payload names differ: missing {sorted(missing)}, unexpected {sorted(extra)}"
            )
        return {name: self.decompress_tensor(payload[name], layouts[name]) for name in layouts}

    def payload_bytes(self, payload: Mapping[str, bytes]) -> int:
        """Total bytes of a payload's messages (names are the transport's business)."""
        return sum(len(message) for message in payload.values())


class NoCompression(Compressor):
    contract = CompressorContract(
        summary="the tensor itself (the uncompressed baseline)",
        unbiased=True,
        parameters={},
        bytes_formula="6 + 4·ndim + n·itemsize",
        kinds=frozenset({MessageKind.DENSE}),
    )

    def sample(self, tensor: torch.Tensor, generator: torch.Generator) -> Message:
        return tensor

    def expected_bytes(self, tensor: torch.Tensor) -> float:
        return dense_message_bytes(tuple(tensor.shape), tensor.dtype)

    def variance(self, tensor: torch.Tensor) -> float:
        return 0.0


class EntrywiseAtomo(Compressor):
    contract = CompressorContract(
        summary="entry-wise ATOMO (§3.2): variance-optimal Bernoulli sparsification of entries",
        unbiased=True,
        parameters={"budget": "s > 0: expected kept entries per tensor (all if s >= nnz)"},
        bytes_formula="6 + 4·ndim + 12 + sup(E) + 4E + sup(S) + ⌈S/8⌉, E + E[S] = min(s, nnz)",
        kinds=frozenset({MessageKind.ENTRYWISE}),
    )

    def __init__(self, budget: float = 10.0) -> None:
        self.budget = check_budget(budget)

    def sample(self, tensor: torch.Tensor, generator: torch.Generator) -> Message:
        return sample_entrywise(tensor, self.budget, generator)

    def expected_bytes(self, tensor: torch.Tensor) -> float:
        probs = atomo_probabilities(flat_float64(tensor), self.budget)
        num_exact = int((probs >= 1).sum())
        signed = float(probs[probs < 1].sum())
        return _entrywise_expected_bytes(tuple(tensor.shape), num_exact, signed)

    def variance(self, tensor: torch.Tensor) -> float:
        flat = flat_float64(tensor)
        return atomic_variance(flat, atomo_probabilities(flat, self.budget))


class SpectralAtomo(Compressor):
    contract = CompressorContract(
        summary="spectral-ATOMO (§3.4): ATOMO on each layer's SVD; tensors under 2-D dense",
        unbiased=True,
        parameters={
            "budget": "s > 0: expected singular atoms per layer (all if s >= rank)",
            "svd_float64": "bool: take the SVD in float64 (default: in the update's own dtype,"
            " float32 for a float32 model: about half the time, float32-exact factors)",
        },
        bytes_formula="6 + 4·ndim + 4 + 4K(n + m) for the n x m reshape, E[K] = min(s, rank)",
        kinds=frozenset({MessageKind.SPECTRAL, MessageKind.DENSE}),
    )

    def __init__(self, budget: float = 2.0, svd_float64: bool = False) -> None:
        if not isinstance(svd_float64, bool):
            raise ValueError(f"svd_float64 must be a bool, got {svd_float64!r}")
        self.budget = check_budget(budget)
        self.svd_float64 = svd_float64

    @property
    def svd_dtype(self) -> torch.dtype | None:
        """The SVD's dtype: float64 if asked for, else None (the update's own dtype)."""
        return torch.float64 if self.svd_float64 else None

    def sample(self, tensor: torch.Tensor, generator: torch.Generator) -> Message:
        if spectral_matrix_shape(tuple(tensor.shape)) is None:
            return tensor
        return sample_spectral(tensor, self.budget, generator, svd_dtype=self.svd_dtype)

    def _probabilities(self, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        matrix = spectral_matrix(tensor)
        _, sigma, _ = spectral_decomposition(
            matrix, precision=tensor.dtype, svd_dtype=self.svd_dtype
        )
        return sigma, atomo_probabilities(sigma, self.budget)

    def expected_bytes(self, tensor: torch.Tensor) -> float:
        shape = tuple(tensor.shape)
        matrix = spectral_matrix_shape(shape)
        if matrix is None:
            return dense_message_bytes(shape, tensor.dtype)
        _, probs = self._probabilities(tensor)
        fixed = spectral_message_bytes(shape, matrix, 0)
        return fixed + 4 * float(probs.sum()) * sum(matrix)

    def variance(self, tensor: torch.Tensor) -> float:
        if spectral_matrix_shape(tuple(tensor.shape)) is None:
            return 0.0
        return atomic_variance(*self._probabilities(tensor))


class Qsgd(Compressor):
    contract = CompressorContract(
        summary="QSGD (Alistarh et al. 2017), one bucket per tensor, 2^bits - 1 levels",
        unbiased=True,
        parameters={"bits": "b in 1..16: L = 2^b - 1 levels (b = 1 is 1-bit QSGD)"},
        bytes_formula="b = 1: the ENTRYWISE formula with E = 0, E[S] = ‖g‖₁/‖g‖₂; "
        "b > 1: 6 + 4·ndim + 8 + ⌈n·b/8⌉ + ⌈nnz/8⌉",
        kinds=frozenset({MessageKind.ENTRYWISE, MessageKind.QSGD}),
    )

    def __init__(self, bits: int = 1) -> None:
        self.levels = qsgd_levels(bits)

    def sample(self, tensor: torch.Tensor, generator: torch.Generator) -> Message:
        return qsgd_quantize(tensor, self.levels, generator)

    def expected_bytes(self, tensor: torch.Tensor) -> float:
        flat = flat_float64(tensor)
        norm = float(torch.linalg.vector_norm(flat))
        scaled = flat.abs() * self.levels / norm if norm > 0 else torch.zeros_like(flat)
        nonzero = float(scaled.clamp(max=1.0).sum())  # P(code > 0) = min(1, L|v|/‖v‖)
        shape = tuple(tensor.shape)
        if self.levels == 1:
            return _entrywise_expected_bytes(shape, 0, nonzero)
        return qsgd_message_bytes(shape, self.levels, 0) + nonzero / 8

    def variance(self, tensor: torch.Tensor) -> float:
        return qsgd_variance(tensor, self.levels)


class LqQuantization(Compressor):
    contract = CompressorContract(
        summary="ℓ_q quantization (§3.3.3): ±‖g‖_q w.p. |g_i|/‖g‖_q (q=2 QSGD, q=inf TernGrad)",
        unbiased=True,
        parameters={"q": "q >= 1 or inf: the norm; larger q sends more entries, less variance"},
        bytes_formula="the ENTRYWISE formula with E = 0, E[S] = ‖g‖₁/‖g‖_q",
        kinds=frozenset({MessageKind.ENTRYWISE}),
    )

    def __init__(self, q: float = 2.0) -> None:
        if not (isinstance(q, int | float) and not isinstance(q, bool) and q >= 1):
            raise ValueError(f"ℓ_q quantization needs q >= 1 (or inf), got {q!r}")
        self.q = float(q)

    def _probabilities(self, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = flat_float64(tensor)
        norm = float(torch.linalg.vector_norm(flat, ord=self.q))
        probs = (flat.abs() / norm).clamp(max=1.0) if norm > 0 else torch.zeros_like(flat)
        return flat, probs

    def sample(self, tensor: torch.Tensor, generator: torch.Generator) -> Message:
        return lq_quantize(tensor, self.q, generator)

    def expected_bytes(self, tensor: torch.Tensor) -> float:
        _, probs = self._probabilities(tensor)
        return _entrywise_expected_bytes(tuple(tensor.shape), 0, float(probs.sum()))

    def variance(self, tensor: torch.Tensor) -> float:
        return atomic_variance(*self._probabilities(tensor))


class TernGrad(LqQuantization):
    contract = CompressorContract(
        summary="TernGrad (Wen et al. 2017), plain: ±max|g| w.p. |g_i|/max|g|, per tensor",
        unbiased=True,
        parameters={},
        bytes_formula="the ENTRYWISE formula with E = 0, E[S] = ‖g‖₁/‖g‖_∞",
        kinds=frozenset({MessageKind.ENTRYWISE}),
    )

    def __init__(self) -> None:
        super().__init__(q=math.inf)

    def sample(self, tensor: torch.Tensor, generator: torch.Generator) -> Message:
        return terngrad_quantize(tensor, generator)
