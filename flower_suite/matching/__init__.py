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
* :mod:`~flower_suite.matching.layerwise`: one step of the layer-wise protocol, server side
  (:func:`match_client_layers`, :func:`average_last_layer`) and client side
  (:func:`install_global_layer`) (spec sections 5 and 6).
* :mod:`~flower_suite.matching.architecture`: rebuild any supported model at grown widths
  (:func:`model_for_state`, :func:`resize_model`, :func:`matchable_layers`).
"""

from flower_suite.matching.architecture import (
    count_state_parameters,
    matchable_layers,
    model_for_state,
    resize_model,
    state_shapes,
)
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
from flower_suite.matching.layerwise import (
    LayerMatch,
    average_last_layer,
    install_global_layer,
    layer_tensor_names,
    match_client_layers,
    popular_assignment,
)
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
    "LayerMatch",
    "LayerSpec",
    "MatchResult",
    "MatchedAverage",
    "aggregate_units",
    "average_last_layer",
    "average_recurrent",
    "bbp_map_scores",
    "class_weighted_last_layer",
    "class_weights",
    "count_state_parameters",
    "describe_model",
    "expand_index",
    "from_unit_vectors",
    "input_slots",
    "install_global_layer",
    "layer_tensor_names",
    "match_client_layers",
    "match_layer",
    "matchable_layers",
    "matched_average",
    "model_for_state",
    "num_units",
    "output_slots",
    "permute_layer",
    "permute_model",
    "popular_assignment",
    "random_permutations",
    "reconstruct_local",
    "resize_model",
    "scatter_units",
    "state_shapes",
    "unit_vectors",
]
