"""Framework-free update compression: ATOMO and the quantizers it contains (spec ``atomo.md``).

Dissertation chapter 3 (``shared/seeds/004``): an update ``g = Σ λ_i a_i`` over unit-norm atoms
is sent as ``ĝ = Σ (λ_i t_i / p_i) a_i`` with independent ``t_i ~ Bernoulli(p_i)``, unbiased,
with the ``p`` that minimizes variance for an expected number of atoms ``s``.

- :mod:`.probabilities` - the variance-optimal ``p`` (Algorithm 1, Eq. 3.21) and ``Σλ²/p``;
- :mod:`.sparsify` - Eq. 3.2 over any atomic decomposition, seeded Bernoulli draws;
- :mod:`.entrywise` - entry-wise ATOMO (atoms = coordinates);
- :mod:`.spectral` - spectral-ATOMO (SVD of each layer reshaped to a matrix, §3.4);
- :mod:`.quantizers` - QSGD, TernGrad and ℓ_q quantization (§3.3);
- :mod:`.wire_format` / :mod:`.codec` - the byte layout, exact sizes, strict decoding;
- :mod:`.compressors` - one interface over named tensors, registered in :data:`COMPRESSORS`;
- :mod:`.error_feedback` - error feedback made contractive by scaling (``C/(1 + ω)``).
"""

from __future__ import annotations

from flower_suite.compression.codec import Message, decode, encode, message_bytes
from flower_suite.compression.compressors import (
    Compressor,
    CompressorContract,
    EntrywiseAtomo,
    LqQuantization,
    NoCompression,
    Qsgd,
    SpectralAtomo,
    TensorLayout,
    TernGrad,
    layouts_of,
)
from flower_suite.compression.entrywise import EntrywiseSample, sample_entrywise
from flower_suite.compression.error_feedback import contractive_scale, error_feedback_step
from flower_suite.compression.probabilities import (
    AtomoSolution,
    atomic_second_moment,
    atomic_variance,
    atomo_probabilities,
    atomo_solution,
    uniform_probabilities,
)
from flower_suite.compression.quantizers import (
    QsgdSample,
    lq_quantize,
    qsgd_levels,
    qsgd_quantize,
    qsgd_variance,
    terngrad_quantize,
)
from flower_suite.compression.sparsify import (
    keep_mask,
    sparsified_weights,
    sparsify_decomposition,
)
from flower_suite.compression.spectral import (
    SpectralSample,
    sample_spectral,
    spectral_decomposition,
    spectral_matrix_shape,
    svd_precision,
)
from flower_suite.compression.wire_format import (
    CodecError,
    MessageKind,
    dense_message_bytes,
    entrywise_message_bytes,
    qsgd_message_bytes,
    spectral_message_bytes,
)
from flower_suite.registry import Registry

COMPRESSORS: Registry[Compressor] = Registry("compressor")
COMPRESSORS.register("none", NoCompression)
COMPRESSORS.register("atomo_entrywise", EntrywiseAtomo)
COMPRESSORS.register("atomo_spectral", SpectralAtomo)
COMPRESSORS.register("qsgd", Qsgd)
COMPRESSORS.register("terngrad", TernGrad)
COMPRESSORS.register("lq", LqQuantization)

__all__ = [
    "COMPRESSORS",
    "AtomoSolution",
    "CodecError",
    "Compressor",
    "CompressorContract",
    "EntrywiseAtomo",
    "EntrywiseSample",
    "LqQuantization",
    "Message",
    "MessageKind",
    "NoCompression",
    "Qsgd",
    "QsgdSample",
    "SpectralAtomo",
    "SpectralSample",
    "TensorLayout",
    "TernGrad",
    "atomic_second_moment",
    "atomic_variance",
    "atomo_probabilities",
    "atomo_solution",
    "contractive_scale",
    "decode",
    "dense_message_bytes",
    "encode",
    "entrywise_message_bytes",
    "error_feedback_step",
    "keep_mask",
    "layouts_of",
    "lq_quantize",
    "message_bytes",
    "qsgd_levels",
    "qsgd_message_bytes",
    "qsgd_quantize",
    "qsgd_variance",
    "sample_entrywise",
    "sample_spectral",
    "sparsified_weights",
    "sparsify_decomposition",
    "spectral_decomposition",
    "spectral_matrix_shape",
    "spectral_message_bytes",
    "svd_precision",
    "terngrad_quantize",
    "uniform_probabilities",
]
