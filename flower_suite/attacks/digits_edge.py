"""The ``digits_edge`` data set: scikit-learn digits without the edge-case images.

``data.dataset = "digits_edge"`` in an experiment config names it; importing
:mod:`flower_suite.attacks` registers it in :data:`~flower_suite.data.registry.DATASETS`, like
every other data set. Its (train, test) split and the edge examples of the built-in
``attack.edge_set = "digits"`` come from one :func:`~flower_suite.attacks.edge_case.
digits_edge_case` run per seed, computed once per process (:func:`digits_edge`).
"""

from __future__ import annotations

import functools

from flower_suite.attacks.edge_case import DigitsEdgeCase, digits_edge_case
from flower_suite.data.registry import Split, register_dataset

__all__ = ["DIGITS_EDGE_DATASET", "digits_edge", "load_digits_edge"]

DIGITS_EDGE_DATASET = "digits_edge"


@functools.lru_cache(maxsize=16)  # a bench grid cycles its seeds (5 in digits_edge's)
def digits_edge(seed: int) -> DigitsEdgeCase:
    """The built-in digits edge-case task for ``seed`` (spec section 9), once per process."""
    return digits_edge_case(seed)


def load_digits_edge(path: str, test_fraction: float, seed: int) -> Split:
    """The ``digits_edge`` loader: digits without the edge images (``path`` and
    ``test_fraction`` unused: the split is the edge-case task's)."""
    edge = digits_edge(seed)
    return edge.train, edge.test


register_dataset(DIGITS_EDGE_DATASET, load_digits_edge)
