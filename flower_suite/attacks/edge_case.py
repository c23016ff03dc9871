"""Building p-edge-case sets: low-density tails under a GMM of a clean model's logits.

Wang et al., "Attack of the Tails", NeurIPS 2020, Definition 8.1 and Fig 8.1 (spec
``edge-case-backdoors.md`` section 2): ``D_edge`` is a *p-edge-case set* if ``P_X(x) <= p``
for all its inputs, with a small ``p > 0``. To find such inputs:

1. train a model ``g`` on clean data ``D``;
2. collect its last-layer outputs (logits) ``g(x)`` on clean samples;
3. fit a Gaussian mixture with one component per class to them, so that
   ``ln P_X(x) ~= GMM.score_samples(g(x))``;
4. score every candidate and keep the low-density tail (a quantile or a threshold).

The components are initialised at the class means of the logits (one component per class,
literally), with full covariances and ``reg_covar = 1e-3`` (spec pitfall 14).

:func:`digits_edge_case` builds the built-in analogue of the paper's ARDIS task on
scikit-learn's digits: the 25% lowest-density "7"s, labelled "1". Users may pass any
:class:`~flower_suite.data.dataset.ArrayDataset` as their own edge set instead; the helpers
here (:func:`relabel`, :func:`split_edge_examples`) work on any of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from flower_suite.data.dataset import ArrayDataset
from flower_suite.data.digits import DIGITS_TEST_SIZE, load_digits_dataset
from flower_suite.models.mlp import MLP
from flower_suite.training import TrainConfig, train

if TYPE_CHECKING:  # imported where a GMM is fitted: scikit-learn adds ~2 s to every start-up
    from sklearn.mixture import GaussianMixture

FeatureFn = Callable[[np.ndarray], np.ndarray]


@torch.no_grad()
def model_logits(model: nn.Module, x: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
    """The model's last-layer outputs (logits) for inputs ``x``, as float64 ``(N, C)`` (CPU)."""
    model.to("cpu").eval()
    inputs = torch.as_tensor(x)
    outs = [model(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
    return torch.cat(outs).double().numpy()


def _features(source: nn.Module | FeatureFn, x: np.ndarray) -> np.ndarray:
    features = model_logits(source, x) if isinstance(source, nn.Module) else source(x)
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or not np.isfinite(features).all():
        raise ValueError("features must be a finite 2-D (N, k) array")
    return features


def fit_class_gmm(
    features: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    n_components: int | None = None,
    covariance_type: str = "full",
    reg_covar: float = 1e-3,
    seed: int = 0,
) -> GaussianMixture:
    """Fit a GMM with one component per class to clean last-layer outputs.

    With ``labels``, ``n_components`` defaults to the number of distinct labels and the
    components start at the class means; without, ``n_components`` is required.
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) == 0 or not np.isfinite(features).all():
        raise ValueError("GMM features must be a finite, non-empty 2-D (N, k) array")
    means_init = None
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(features),):
            raise ValueError("labels must have one entry per feature row")
        classes = np.unique(labels)
        n_components = n_components or len(classes)
        if n_components == len(classes):
            means_init = np.stack([features[labels == c].mean(axis=0) for c in classes])
    if n_components is None or n_components < 1:
        raise ValueError("give labels or n_components >= 1")
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(
        n_components=n_components,
        covariance_type=covariance_type,
        reg_covar=reg_covar,
        means_init=means_init,
        random_state=seed,
    )
    return gmm.fit(features)


def gmm_tail_scores(
    features: np.ndarray,
    labels: np.ndarray | None,
    candidates: np.ndarray,
    **gmm_kwargs: object,
) -> tuple[np.ndarray, GaussianMixture]:
    """Log-densities ``ln P(x)`` of ``candidates`` under a class GMM fitted on ``features``.

    Returns ``(scores, gmm)``; low scores are the edge-case tail. ``gmm_kwargs`` go to
    :func:`fit_class_gmm`.
    """
    gmm = fit_class_gmm(features, labels, **gmm_kwargs)  # type: ignore[arg-type]
    candidates = np.asarray(candidates, dtype=np.float64)
    if candidates.ndim != 2 or candidates.shape[1] != features.shape[1]:
        raise ValueError("candidates must be (N, k) with the features' k")
    return gmm.score_samples(candidates), gmm


def select_tail(
    log_density: np.ndarray, *, tail_quantile: float | None = None, threshold: float | None = None
) -> tuple[np.ndarray, float]:
    """Indices of the low-density tail, lowest first, and the threshold used.

    ``tail_quantile = q`` keeps the ``ceil(q N)`` lowest scores (the threshold is the largest
    kept score); ``threshold = tau`` keeps every score ``<= tau``. Give exactly one.
    """
    if (tail_quantile is None) == (threshold is None):
        raise ValueError("give exactly one of tail_quantile and threshold")
    order = np.argsort(log_density, kind="stable")
    if tail_quantile is not None:
        if not 0 < tail_quantile <= 1:
            raise ValueError(f"tail_quantile must be in (0, 1], got {tail_quantile}")
        count = math.ceil(tail_quantile * len(order))
        chosen = order[:count]
        return chosen, float(log_density[chosen[-1]]) if count else -math.inf
    assert threshold is not None
    if math.isnan(threshold):
        raise ValueError("threshold must not be NaN")
    chosen = order[log_density[order] <= threshold]
    return chosen, float(threshold)


@dataclass(frozen=True)
class EdgeSelection:
    """The outcome of :func:`build_edge_case_set`.

    ``indices`` into the candidates (lowest density first); ``edge`` the selected candidates
    (relabelled to ``target_label`` if one was given); ``log_density`` of every candidate and
    ``benign_log_density`` of every benign sample under the same GMM; ``easy_fraction`` the
    share of selected samples the clean model assigns to their true label ("seemingly easy").
    """

    indices: np.ndarray
    edge: ArrayDataset
    log_density: np.ndarray
    benign_log_density: np.ndarray
    threshold: float
    easy_fraction: float
    gmm: GaussianMixture


def build_edge_case_set(
    model_or_feature_fn: nn.Module | FeatureFn,
    benign: ArrayDataset,
    candidates: ArrayDataset,
    *,
    tail_quantile: float | None = 0.25,
    threshold: float | None = None,
    target_label: int | None = None,
    covariance_type: str = "full",
    reg_covar: float = 1e-3,
    seed: int = 0,
) -> EdgeSelection:
    """Select the low-density tail of ``candidates`` (Fig 8.1 procedure).

    Parameters
    ----------
    model_or_feature_fn : nn.Module or callable
        The clean model (its logits are used) or any ``x -> (N, k)`` feature function.
    benign : ArrayDataset
        Clean data ``D`` the GMM is fitted on (one component per class of its labels).
    candidates : ArrayDataset
        The pool to select from; its labels are the true ones (for ``easy_fraction``).
    tail_quantile, threshold : float
        The tail rule (see :func:`select_tail`); pass ``threshold`` with
        ``tail_quantile=None``.
    target_label : int, optional
        Relabel the selected samples to the attacker's target.
    """
    if threshold is not None:
        tail_quantile = None
    benign_features = _features(model_or_feature_fn, benign.x)
    candidate_features = _features(model_or_feature_fn, candidates.x)
    scores, gmm = gmm_tail_scores(
        benign_features,
        benign.y,
        candidate_features,
        covariance_type=covariance_type,
        reg_covar=reg_covar,
        seed=seed,
    )
    indices, used = select_tail(scores, tail_quantile=tail_quantile, threshold=threshold)
    predicted = candidate_features[indices].argmax(axis=1)
    easy = float((predicted == candidates.y[indices]).mean()) if len(indices) else math.nan
    edge = candidates.subset(indices)
    if target_label is not None:
        edge = relabel(edge, target_label)
    return EdgeSelection(
        indices=indices,
        edge=edge,
        log_density=scores,
        benign_log_density=gmm.score_samples(benign_features),
        threshold=used,
        easy_fraction=easy,
        gmm=gmm,
    )


def relabel(data: ArrayDataset, label: int, name: str | None = None) -> ArrayDataset:
    """A copy of ``data`` with every label set to ``label`` (the attacker's target)."""
    if not 0 <= label < data.num_classes:
        raise ValueError(f"label {label} outside [0, {data.num_classes})")
    return ArrayDataset(
        x=data.x.copy(),
        y=np.full(len(data), label, dtype=np.int64),
        num_classes=data.num_classes,
        name=name or data.name,
        groups=data.groups,
    )


ONE_PIXEL_ROLLS: tuple[tuple[int, int], ...] = ((1, 0), (-1, 0), (0, 1), (0, -1))


def roll_augment(
    data: ArrayDataset, shifts: Sequence[tuple[int, int]] = ONE_PIXEL_ROLLS
) -> ArrayDataset:
    """``data`` followed by one copy per (rows, cols) roll of the images' last two axes."""
    xs = [data.x] + [np.roll(data.x, shift, axis=(-2, -1)) for shift in shifts]
    return ArrayDataset(
        x=np.concatenate(xs),
        y=np.tile(data.y, len(xs)),
        num_classes=data.num_classes,
        name=data.name,
    )


@dataclass(frozen=True)
class DigitsEdgeCase:
    """The digits edge-case task (spec section 9): clean splits without the edge images,
    the attacker's edge-train set and the held-out edge-test set (both target-labelled,
    augmented independently), and the selection diagnostics."""

    train: ArrayDataset
    test: ArrayDataset
    edge_train: ArrayDataset
    edge_test: ArrayDataset
    edge_indices: np.ndarray  # into load_digits_dataset(), lowest density first
    source_class: int
    target_label: int
    selection: EdgeSelection
    reference_model: nn.Module

    @property
    def edge_log_density(self) -> float:
        """Mean GMM log-density of the selected edge images."""
        return float(self.selection.log_density[self.selection.indices].mean())


def digits_edge_case(
    seed: int = 0,
    *,
    source_class: int = 7,
    target_label: int = 1,
    tail_quantile: float = 0.25,
    edge_train_fraction: float = 0.6,
    augment: bool = True,
    epochs: int = 30,
    test_size: int = DIGITS_TEST_SIZE,
) -> DigitsEdgeCase:
    """The "tail 7s labelled as 1" edge-case task on scikit-learn digits (ARDIS analogue).

    Shuffle with ``seed`` and hold out ``test_size`` images; train an MLP 64-64-10 for
    ``epochs`` epochs on the rest; fit the class GMM to its train logits; take the
    ``tail_quantile`` lowest-density images of ``source_class`` in the whole data set (45 by
    default), remove them from both splits, split them ``edge_train_fraction`` / rest (27/18)
    and augment each part independently with 4 one-pixel rolls (135/90).
    Deterministic in ``seed``.
    """
    if not 0 < edge_train_fraction < 1:
        raise ValueError(f"edge_train_fraction must be in (0, 1), got {edge_train_fraction}")
    full = load_digits_dataset()
    order = np.random.default_rng(seed).permutation(len(full))  # as train_test_split
    test_idx, train_idx = order[:test_size], order[test_size:]
    torch.manual_seed(seed)
    model = MLP()
    config = TrainConfig(local_epochs=epochs, lr=0.05, momentum=0.9, batch_size=32)
    train(model, full.subset(train_idx), config, seed=seed, device=torch.device("cpu"))
    sources = np.flatnonzero(full.y == source_class)
    selection = build_edge_case_set(
        model,
        full.subset(train_idx),
        full.subset(sources),
        tail_quantile=tail_quantile,
        target_label=target_label,
        seed=seed,
    )
    edge_indices = sources[selection.indices]
    shuffled = np.random.default_rng([seed, 1]).permutation(edge_indices)
    n_train = round(edge_train_fraction * len(shuffled))
    parts = [
        relabel(full.subset(part), target_label, name=f"digits-edge-{kind}")
        for part, kind in ((shuffled[:n_train], "train"), (shuffled[n_train:], "test"))
    ]
    if augment:
        parts = [roll_augment(part) for part in parts]
    is_edge = np.isin(np.arange(len(full)), edge_indices)
    return DigitsEdgeCase(
        train=full.subset(train_idx[~is_edge[train_idx]]),
        test=full.subset(test_idx[~is_edge[test_idx]]),
        edge_train=parts[0],
        edge_test=parts[1],
        edge_indices=edge_indices,
        source_class=source_class,
        target_label=target_label,
        selection=selection,
        reference_model=model,
    )


@dataclass(frozen=True)
class EdgeSplit:
    """Edge examples held by the attacker and by each honest holder (``array_split`` sizes)."""

    attacker: ArrayDataset
    honest: tuple[ArrayDataset, ...]


def split_edge_examples(
    edge_set: ArrayDataset,
    attacker_fraction: float,
    num_honest_holders: int,
    seed: int,
    *,
    num_attacker_examples: int | None = None,
    honest_label: int | None = None,
) -> EdgeSplit:
    """The paper's p% split (Fig 8.3): the attacker holds ``p`` of the edge examples in use.

    Without ``num_attacker_examples``: the attacker gets ``round(p N)`` of the ``N`` examples
    and the honest holders the rest. With it (the paper's protocol: the adversary always has
    ``a`` examples, e.g. 66 ARDIS images), the honest side gets ``round(a (1 - p) / p)`` more,
    so that ``a / (a + h) = p``. The honest part is shuffled with ``seed`` and spread over
    ``num_honest_holders`` clients with ``numpy.array_split``; ``honest_label`` relabels it
    (honest clients hold the edge inputs **correctly labelled**, e.g. 7).
    """
    n = len(edge_set)
    if math.isnan(attacker_fraction) or not 0 < attacker_fraction <= 1:
        raise ValueError(f"attacker_fraction must be in (0, 1], got {attacker_fraction}")
    if num_attacker_examples is None:
        a = round(attacker_fraction * n)
        h = n - a
    else:
        a = num_attacker_examples
        h = round(a * (1 - attacker_fraction) / attacker_fraction)
    if a < 1 or a + h > n:
        raise ValueError(f"cannot give the attacker {a} and honest clients {h} of {n} examples")
    if h > 0 and num_honest_holders < 1:
        raise ValueError(f"{h} honest edge examples need num_honest_holders >= 1")
    order = np.random.default_rng(seed).permutation(n)
    honest = edge_set.subset(order[a : a + h])
    if honest_label is not None:
        honest = relabel(honest, honest_label)
    chunks = np.array_split(np.arange(h), num_honest_holders) if h > 0 else []
    return EdgeSplit(
        attacker=edge_set.subset(order[:a]),
        honest=tuple(honest.subset(chunk) for chunk in chunks),
    )
