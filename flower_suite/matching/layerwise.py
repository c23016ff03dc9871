"""One step of layer-wise FedMA, server and client side (spec ``shared/spec/fedma.md`` §5-6).

Framework-free kernels that the Flower strategy and client handler only transport:

* server: :func:`match_client_layers` matches layer ``n`` of ``J`` clients (BBP-MAP, §4) and
  averages it (plain mean over matched clients; LSTM ``weight_hh`` over clients holding both
  units, §2); :func:`average_last_layer` is the class-proportion weighted last layer (§5,
  step 3); :func:`popular_assignment` picks a client-size sub-model for a client that has no
  assignment yet (partial participation, beyond the text);
* client: :func:`install_global_layer` replaces local layer ``n`` with the global one and
  scatters layer ``n+1``'s input side to the global positions, ``Pi_j W_{j,n+1}`` (§5,
  step 4). :func:`~flower_suite.matching.reconstruct_local` (§6) is the inverse used at the
  start of every FedMA-with-communication round.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from flower_suite.matching.average import (
    average_recurrent,
    class_weighted_last_layer,
    from_unit_vectors,
    unit_vectors,
)
from flower_suite.matching.bbp_map import match_layer
from flower_suite.matching.permutation import LayerSpec, input_slots, num_units, scatter_units

__all__ = [
    "LayerMatch",
    "average_last_layer",
    "install_global_layer",
    "layer_tensor_names",
    "match_client_layers",
    "popular_assignment",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class LayerMatch:
    """Outcome of :func:`match_client_layers`.

    Attributes
    ----------
    tensors:
        The global layer's tensors (float64), keyed by the model's tensor names.
    assignments:
        Per client (input order) the injective map of its units to global units.
    counts:
        Number of clients matched to each global unit.
    width:
        The global width ``L'_n``.
    seconds:
        Wall time of the matching and averaging.
    """

    tensors: dict[str, FloatArray]
    assignments: list[IntArray]
    counts: IntArray
    width: int
    seconds: float


def layer_tensor_names(spec: LayerSpec) -> list[str]:
    """Names of the tensors a layer owns (weight, bias and, for an LSTM, the recurrent ones)."""
    names = (spec.weight, spec.bias, spec.weight_hh, spec.bias_hh)
    return [name for name in names if name is not None]


def _numpy(value: Any) -> FloatArray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def match_client_layers(
    client_layers: Sequence[Mapping[str, ArrayLike]],
    spec: LayerSpec,
    *,
    gamma0: float = 7.0,
    sigma0_sq: float = 1.0,
    sigma_sq: float = 1.0,
    iterations: int = 5,
    seed: int = 0,
    max_width: int | None = None,
    popularity_weight: float = 1.0,
    aggregation: str = "mean",
) -> LayerMatch:
    """Match and average one hidden layer uploaded by ``J`` clients (spec §5, step 2).

    Parameters
    ----------
    client_layers:
        Per client the tensors of layer ``spec`` (see :func:`layer_tensor_names`); their input
        side is already aligned to the global previous layer, so all clients share it.
    spec:
        The layer; its units are matched on ``[w; b]`` vectors
        (:func:`~flower_suite.matching.unit_vectors`).
    gamma0, sigma0_sq, sigma_sq, iterations, seed, max_width, popularity_weight, aggregation:
        Passed to :func:`~flower_suite.matching.match_layer`.

    Raises
    ------
    ValueError
        No clients, missing tensors, or input sides of different sizes.
    """
    if not client_layers:
        raise ValueError("matching a layer needs at least one client")
    names = layer_tensor_names(spec)
    for j, layer in enumerate(client_layers):
        missing = [n for n in names if n not in layer]
        if missing:
            raise ValueError(f"client {j} did not send {missing} of layer {spec.weight!r}")
    start = time.perf_counter()
    states = [{name: _numpy(layer[name]) for name in names} for layer in client_layers]
    tails = {st[spec.weight].shape[1:] for st in states}
    if len(tails) != 1:
        raise ValueError(
            f"layer {spec.weight!r}: clients disagree on the input side {sorted(tails)}; "
            "every client must align it to the same global previous layer"
        )
    result = match_layer(
        [unit_vectors(st, spec) for st in states],
        gamma0=gamma0,
        sigma0_sq=sigma0_sq,
        sigma_sq=sigma_sq,
        iterations=iterations,
        seed=seed,
        max_width=max_width,
        popularity_weight=popularity_weight,
        aggregation=aggregation,
    )
    tensors = from_unit_vectors(result.global_weights, spec, states[0][spec.weight].shape)
    if spec.kind == "lstm":
        assert spec.weight_hh is not None
        hh = [st[spec.weight_hh] for st in states]
        tensors[spec.weight_hh] = average_recurrent(hh, result.assignments, result.width)
    return LayerMatch(
        tensors=tensors,
        assignments=result.assignments,
        counts=result.counts,
        width=result.width,
        seconds=time.perf_counter() - start,
    )


def average_last_layer(
    client_layers: Sequence[Mapping[str, ArrayLike]],
    spec: LayerSpec,
    class_counts: ArrayLike,
) -> dict[str, FloatArray]:
    """Class-proportion weighted average of the output layer (spec §5, step 3).

    ``class_counts`` is the ``(J, K)`` matrix of the clients' label counts; a class no client
    holds gets uniform weights. Clients disclose these counts (a privacy cost, spec §13).
    """
    if spec.kind not in ("linear", "conv"):
        raise ValueError(f"the output layer must be Linear or Conv2d, not {spec.kind!r}")
    out: dict[str, FloatArray] = {}
    for name in layer_tensor_names(spec):
        tensors = [_numpy(layer[name]) for layer in client_layers]
        if len({t.shape for t in tensors}) != 1:
            raise ValueError(f"output layer {name!r} has different shapes across clients")
        out[name] = class_weighted_last_layer(tensors, class_counts)
    return out


def install_global_layer(
    state: Mapping[str, Any],
    spec: LayerSpec,
    next_spec: LayerSpec,
    tensors: Mapping[str, ArrayLike],
    assignment: ArrayLike,
) -> dict[str, Any]:
    """Client side of spec §5, step 4: take global layer ``n``, align layer ``n+1``'s input.

    Returns a copy of ``state`` in which the tensors of ``spec`` are the global ones
    (``tensors``, width ``L'_n``) and the input side of ``next_spec`` is scattered so that the
    client's unit ``l`` feeds global position ``assignment[l]``, with zeros where the client
    has no unit (whole ``H*W`` blocks for conv -> FC, joint gate rows for LSTM). The client's
    function is unchanged wherever its units were matched exactly.
    """
    names = layer_tensor_names(spec)
    if sorted(tensors) != sorted(names):
        raise ValueError(f"global layer must hold exactly {names}, got {sorted(tensors)}")
    assign = np.asarray(assignment, dtype=np.int64)
    own = num_units(state, spec)
    if assign.shape != (own,):
        raise ValueError(f"assignment has shape {assign.shape}, the client layer has {own} units")
    out = dict(state)
    out.update({name: _numpy(value) for name, value in tensors.items()})
    width = num_units(out, spec)
    if assign.size and (assign.min() < 0 or assign.max() >= width):
        raise ValueError(f"assignment points outside the global width {width}")
    if len(np.unique(assign)) != assign.size:
        raise ValueError("an assignment must be injective")
    for name, axis, mode in input_slots(next_spec):
        out[name] = scatter_units(state[name], axis, assign, width, mode)
    return out


def popular_assignment(counts: ArrayLike, n_units: int) -> IntArray:
    """The ``n_units`` global units matched by most clients, in global order.

    Gives a client that missed the previous pass a sub-model of its own size to start from
    (beyond the text: the dissertation samples every client every round, spec §9).
    """
    popularity = np.asarray(counts)
    if n_units > popularity.shape[0]:
        raise ValueError(f"cannot pick {n_units} units from a layer of {popularity.shape[0]}")
    return np.sort(np.argsort(-popularity, kind="stable")[:n_units]).astype(np.int64)
