"""Data-level attacks: the black-box edge-case mix and label flipping (framework-free).

A black-box attacker can only replace its local data set (Wang et al., "Attack of the
Tails", NeurIPS 2020, spec ``edge-case-backdoors.md`` 3a): it trains with the honest
optimiser, schedule and epochs on ``D' = D'_edge U D'_clean``, where the edge examples carry
the target label. Label flipping (e.g. Tolpegin et al., ESORICS 2020) trains on
``y -> C - 1 - y`` or any given mapping. Both need nothing but the attacker's own data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from flower_suite.data.dataset import ArrayDataset
from flower_suite.registry import Registry


def check_ratio(ratio: float) -> float:
    """``ratio`` as a float; ``ValueError`` unless it lies in [0, 1]."""
    ratio = float(ratio)
    if math.isnan(ratio) or not 0 <= ratio <= 1:
        raise ValueError(f"mixing ratio must be in [0, 1], got {ratio}")
    return ratio


def mix_sizes(
    num_clean: int, num_edge: int, ratio: float, size: int | None = None
) -> tuple[int, int]:
    """``(edge, clean)`` counts of the mix ``D'`` with ``edge / (edge + clean) = ratio``.

    With ``size``: ``edge = round(ratio * size)`` and ``clean = size - edge``. Without: the
    largest mix drawable without replacement, ``size = min(num_edge / ratio,
    num_clean / (1 - ratio))`` (rounded down).
    """
    check_ratio(ratio)
    if size is None:
        limits = []
        if ratio > 0:
            limits.append(num_edge / ratio)
        if ratio < 1:
            limits.append(num_clean / (1 - ratio))
        size = math.floor(min(limits) + 1e-9)  # 1e-9: 40/0.5 must not round to 79
    if size < 1:
        raise ValueError(f"the poisoned data set would be empty (size {size})")
    n_edge = round(ratio * size)
    n_clean = size - n_edge
    if n_edge > num_edge or n_clean > num_clean:
        raise ValueError(
            f"a mix of {n_edge} edge + {n_clean} clean examples needs more than the "
            f"{num_edge} edge / {num_clean} clean examples available"
        )
    return n_edge, n_clean


def mix_poison(
    clean: ArrayDataset,
    edge: ArrayDataset,
    ratio: float = 0.5,
    seed: int = 0,
    *,
    size: int | None = None,
) -> ArrayDataset:
    """The black-box attacker's local data: edge and clean examples mixed at ``ratio``.

    Convention: ``ratio`` is the **fraction of the poisoned data set drawn from the edge
    set**, ``|D'_edge| / |D'|`` (spec 3a; default 0.5, spec pitfall 6; > 0.5 is what the text
    recommends, Task 2 used 66/166). Examples are drawn without replacement with ``seed``
    and shuffled; the edge examples keep their labels (relabel them to the target first,
    e.g. with :func:`flower_suite.attacks.edge_case.relabel`). ``size`` fixes ``|D'|`` (the
    spec's digits benchmark uses 40 edge + 40 clean: ``ratio=0.5, size=80``); by default the
    largest mix that fits is used (:func:`mix_sizes`).
    """
    if edge.num_classes != clean.num_classes:
        raise ValueError(f"edge set has {edge.num_classes} classes, clean data {clean.num_classes}")
    if edge.x.shape[1:] != clean.x.shape[1:]:
        raise ValueError(f"edge inputs {edge.x.shape[1:]} differ from clean {clean.x.shape[1:]}")
    n_edge, n_clean = mix_sizes(len(clean), len(edge), ratio, size)
    rng = np.random.default_rng(seed)
    edge_part = edge.subset(rng.choice(len(edge), n_edge, replace=False))
    clean_part = clean.subset(rng.choice(len(clean), n_clean, replace=False))
    order = rng.permutation(n_edge + n_clean)
    return ArrayDataset(
        x=np.concatenate([edge_part.x, clean_part.x.astype(edge_part.x.dtype)])[order],
        y=np.concatenate([edge_part.y, clean_part.y])[order],
        num_classes=clean.num_classes,
        name=f"{clean.name}+edge",
    )


def flip_labels(data: ArrayDataset, mapping: Mapping[int, int] | None = None) -> ArrayDataset:
    """Label flipping: ``y -> mapping[y]`` (labels not in the mapping are kept), or
    ``y -> C - 1 - y`` for all ``C`` classes when ``mapping`` is None."""
    if mapping is None:
        y = data.num_classes - 1 - data.y
    else:
        for src, dst in mapping.items():
            if not (0 <= src < data.num_classes and 0 <= dst < data.num_classes):
                raise ValueError(f"label mapping {src}->{dst} outside [0, {data.num_classes})")
        table = np.arange(data.num_classes)
        for src, dst in mapping.items():
            table[src] = dst
        y = table[data.y]
    return ArrayDataset(
        x=data.x,
        y=y.astype(np.int64),
        num_classes=data.num_classes,
        name=f"{data.name}-flipped",
        groups=data.groups,
    )


# A poison turns the attacker's clean local data into its training data: poison(data, seed).
Poison = Callable[[ArrayDataset, int], ArrayDataset]

DATA_POISONS: Registry[Poison] = Registry("data poison")


@DATA_POISONS.register("label_flip")
def make_label_flip(*, mapping: Mapping[int, int] | None = None) -> Poison:
    """Label flipping as a :data:`Poison` (local data only)."""
    return lambda data, _seed: flip_labels(data, mapping)


@DATA_POISONS.register("edge_mix")
def make_edge_mix(*, edge: ArrayDataset, ratio: float = 0.5, size: int | None = None) -> Poison:
    """The black-box edge-case mix as a :data:`Poison` (``edge`` target-labelled)."""
    check_ratio(ratio)  # fail when configured, not in the first attack round
    return lambda data, seed: mix_poison(data, edge, ratio, seed, size=size)
