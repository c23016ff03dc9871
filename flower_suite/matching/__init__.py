"""FedMA matching core: framework-free BBP-MAP matching and matched averaging.

Federated Matched Averaging (dissertation chapter 5; implementation spec
``shared/spec/fedma.md``) matches client hidden units (neurons, conv channels, LSTM hidden
states) to global units before averaging them.

* :mod:`~flower_suite.matching.permutation`: permutation invariance of FC, conv (including the
  conv -> FC block move) and LSTM units on state dicts (spec section 2).
* :mod:`~flower_suite.matching.bbp_map`: the BBP-MAP score matrix and iterative Hungarian
  matching of one layer, :func:`match_layer` (spec sections 3, 4 and 8).
* :mod:`~flower_suite.matching.average`: matched averaging given assignments and a one-shot
  layer-by-layer :func:`matched_average` of whole models (spec sections 3 and 5).
"""

from flower_suite.matching.average import (
    MatchedAverage,
    aggregate_units,
    average_recurrent,
    class_weighted_last_layer,
    class_weights,
    from_unit_vectors,
    matched_average,
    unit_vectors,
)
from flower_suite.matching.bbp_map import MatchResult, bbp_map_scores, match_layer
from flower_suite.matching.permutation import (
    LayerSpec,
    describe_model,
    expand_index,
    input_slots,
    num_units,
    output_slots,
    permute_layer,
    permute_model,
    random_permutations,
    reconstruct_local,
    scatter_units,
)

__all__ = [
    "LayerSpec",
    "MatchResult",
    "MatchedAverage",
    "aggregate_units",
    "average_recurrent",
    "bbp_map_scores",
    "class_weighted_last_layer",
    "class_weights",
    "describe_model",
    "expand_index",
    "from_unit_vectors",
    "input_slots",
    "match_layer",
    "matched_average",
    "num_units",
    "output_slots",
    "permute_layer",
    "permute_model",
    "random_permutations",
    "reconstruct_local",
    "scatter_units",
    "unit_vectors",
]
