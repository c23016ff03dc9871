"""Framework-free coding core: DRACO's repetition and cyclic codes (dissertation chapter 6).

Each DRACO code assigns ``2s + 1`` copies of every data partition to the ``P`` nodes, and its
decoder returns the *exact* sum of the partition gradients ``G·1_P`` whenever at most ``s``
nodes are adversarial, missing or failed (Definition 6.3), or raises a :class:`DecodingError`
(skip the round). Spec: ``shared/spec/draco.md``.

- :mod:`~flower_suite.coding.repetition`: groups of ``2s + 1`` nodes, majority vote per group.
- :mod:`~flower_suite.coding.cyclic` / :mod:`~flower_suite.coding.cyclic_decoding`: the cyclic
  code (complex messages, Fourier locator).
- :mod:`~flower_suite.coding.screening`: missing, malformed and non-finite messages become
  erasures that count toward ``s``.
- :mod:`~flower_suite.coding.allocation`: the allocation matrix and the node encoder shared by
  both codes.

ApproxIFER's approximate coding for prediction serving (spec ``shared/spec/approxifer.md``):
:mod:`~flower_suite.coding.berrut` (Berrut encoding/decoding), :mod:`~flower_suite.coding.
approxifer_locator` (Byzantine error locator) and :mod:`~flower_suite.coding.laplace` (DP).

DRACO needs the server to own the data and replicate it on ``2s + 1`` nodes, and every node to
answer every round: simulation or cross-silo only, never private cross-device data.

Example
-------
>>> import numpy as np
>>> code = make_repetition_code(num_nodes=6, max_adversaries=1)
>>> gradients = np.arange(12.0).reshape(6, 2)
>>> messages = encode_repetition(code, gradients)
>>> messages[4] = -100.0  # one adversary
>>> result = decode_repetition(code, messages)
>>> result.total.tolist(), result.located
([30.0, 36.0], (4,))
"""

from __future__ import annotations

from flower_suite.coding.allocation import (
    Assignment,
    allocation_matrix,
    encode_message,
    partition_holders,
    redundancy_ratio,
)
from flower_suite.coding.approxifer_locator import (
    LocatorResult,
    RobustDecoding,
    check_code_sizes,
    default_num_workers,
    locate_byzantine,
    required_results,
    robust_decode,
)
from flower_suite.coding.berrut import (
    TooFewResultsError,
    berrut_decode,
    berrut_encode,
    chebyshev_first_kind,
    chebyshev_second_kind,
    decoding_matrix,
    encoding_matrix,
)
from flower_suite.coding.cyclic import (
    MAX_CYCLIC_NODES,
    CyclicCode,
    encode_cyclic,
    fourier_matrix,
    make_cyclic_code,
)
from flower_suite.coding.cyclic_decoding import (
    DEFAULT_TOLERANCE,
    OUTLIER_NORM_RATIO,
    CyclicDecoding,
    codeword_deviation,
    decode_cyclic,
    draw_locator_vector,
    locate_errors,
    project_messages,
    recovery_vector,
)
from flower_suite.coding.errors import (
    DecodingError,
    InconsistentMessagesError,
    NoMajorityError,
    TooManyAdversariesError,
)
from flower_suite.coding.laplace import (
    PROBABILITY_L1_SENSITIVITY,
    LaplaceMechanism,
    clip_l1,
    decoded_l1_sensitivity,
)
from flower_suite.coding.repetition import (
    GroupVote,
    RepetitionCode,
    RepetitionDecoding,
    decode_repetition,
    encode_repetition,
    majority_vote,
    make_repetition_code,
)
from flower_suite.coding.screening import (
    Screening,
    StackedReplies,
    as_message_matrix,
    check_adversary_budget,
    screen_rows,
    stack_replies,
)

__all__ = [
    "DEFAULT_TOLERANCE",
    "MAX_CYCLIC_NODES",
    "OUTLIER_NORM_RATIO",
    "PROBABILITY_L1_SENSITIVITY",
    "Assignment",
    "CyclicCode",
    "CyclicDecoding",
    "DecodingError",
    "GroupVote",
    "InconsistentMessagesError",
    "LaplaceMechanism",
    "LocatorResult",
    "NoMajorityError",
    "RepetitionCode",
    "RepetitionDecoding",
    "RobustDecoding",
    "Screening",
    "StackedReplies",
    "TooFewResultsError",
    "TooManyAdversariesError",
    "allocation_matrix",
    "as_message_matrix",
    "berrut_decode",
    "berrut_encode",
    "chebyshev_first_kind",
    "chebyshev_second_kind",
    "check_adversary_budget",
    "check_code_sizes",
    "clip_l1",
    "codeword_deviation",
    "decode_cyclic",
    "decode_repetition",
    "decoded_l1_sensitivity",
    "decoding_matrix",
    "default_num_workers",
    "draw_locator_vector",
    "encode_cyclic",
    "encode_message",
    "encode_repetition",
    "encoding_matrix",
    "fourier_matrix",
    "locate_byzantine",
    "locate_errors",
    "majority_vote",
    "make_cyclic_code",
    "make_repetition_code",
    "partition_holders",
    "project_messages",
    "recovery_vector",
    "redundancy_ratio",
    "required_results",
    "robust_decode",
    "screen_rows",
    "stack_replies",
]
