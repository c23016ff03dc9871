"""Every aggregation rule against its slow float64 reference (``reference_rules.py``).

Random inputs with a few outlying rows, several ``n``, ``d`` and ``f``, float32 and float64
inputs. Tolerance is relative to the input scale: 1e-6 for float32 inputs, 1e-10 for float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import reference_rules as ref
import torch

from flower_suite.aggregation import (
    AggregationResult,
    base,
    bulyan,
    centered_clipping,
    coordinate_median,
    geometric_median,
    krum,
    multi_krum,
    sign_majority,
    trimmed_mean,
    weighted_mean,
)

Reference = Callable[[np.ndarray, np.ndarray | None], tuple[tuple[int, ...] | None, np.ndarray]]


@dataclass(frozen=True)
class Case:
    rule: Callable[..., AggregationResult]
    reference: Reference
    n: int
    d: int = 7
    kwargs: dict[str, Any] = field(default_factory=dict)
    weighted: bool = False
    outliers: int = 0
    integer_valued: bool = False  # inputs in {-1, 0, 1}: exercises sign ties


def _cases() -> list[Any]:
    cases: list[tuple[str, Case]] = []
    for n, weighted in [(1, False), (4, True), (9, False), (9, True)]:
        cases.append(
            (
                f"mean-n{n}-w{weighted}",
                Case(weighted_mean, lambda x, w: (None, ref.ref_mean(x, w)), n, weighted=weighted),
            )
        )
    for n, f in [(5, 1), (9, 2), (12, 3), (6, 0)]:
        cases.append(
            (
                f"krum-n{n}-f{f}",
                Case(
                    krum,
                    lambda x, w, f=f: _one(ref.ref_krum(x, f)),
                    n,
                    kwargs={"num_malicious_nodes": f},
                    outliers=f,
                ),
            )
        )
        for m, weighted in [(None, False), (None, True), (2, True)]:
            cases.append(
                (
                    f"multikrum-n{n}-f{f}-m{m}-w{weighted}",
                    Case(
                        multi_krum,
                        lambda x, w, f=f, m=m: ref.ref_multi_krum(x, w, f, m),
                        n,
                        kwargs={"num_malicious_nodes": f, "num_nodes_to_select": m},
                        weighted=weighted,
                        outliers=f,
                    ),
                )
            )
    for n in [1, 2, 5, 8, 13]:
        cases.append(
            (
                f"median-n{n}",
                Case(coordinate_median, lambda x, w: (None, ref.ref_median(x)), n, outliers=n // 4),
            )
        )
    for n, beta in [(5, 0.2), (10, 0.1), (13, 0.25), (8, 0.0), (7, 0.45)]:
        cases.append(
            (
                f"trimmed-n{n}-b{beta}",
                Case(
                    trimmed_mean,
                    lambda x, w, beta=beta: (None, ref.ref_trimmed_mean(x, beta)),
                    n,
                    kwargs={"beta": beta},
                    outliers=n // 4,
                ),
            )
        )
    for n, f in [(3, 0), (7, 1), (11, 2), (16, 3), (20, 4)]:
        for variant in ["iterative", "one_shot"]:
            cases.append(
                (
                    f"bulyan-{variant}-n{n}-f{f}",
                    Case(
                        bulyan,
                        lambda x, w, f=f, v=variant: ref.ref_bulyan(x, f, v),
                        n,
                        kwargs={"num_malicious_nodes": f, "variant": variant},
                        outliers=f,
                    ),
                )
            )
    # A fixed, small step count: the step compared here is the same arithmetic in both, while
    # the step at which ``tol`` fires near convergence depends on the last bits.
    gm_kwargs = {"max_iter": 6, "tol": 0.0}
    for n, weighted in [(3, False), (8, True), (13, False)]:
        cases.append(
            (
                f"gm-n{n}-w{weighted}",
                Case(
                    geometric_median,
                    lambda x, w: (None, ref.ref_geometric_median(x, w, **gm_kwargs)[0]),
                    n,
                    kwargs=gm_kwargs,
                    weighted=weighted,
                    outliers=n // 4,
                ),
            )
        )
    for n, integer_valued in [(4, True), (7, True), (9, False)]:
        cases.append(
            (
                f"sign-n{n}-int{integer_valued}",
                Case(
                    sign_majority,
                    lambda x, w: (None, ref.ref_sign_majority(x)),
                    n,
                    integer_valued=integer_valued,
                ),
            )
        )
    center = np.arange(7) / 4 - 0.75  # exact in float32 too
    for tau, iterations, use_center, weighted in [
        (0.5, 1, False, False),
        (2.0, 3, True, True),
        (100.0, 1, False, True),
    ]:
        c = center if use_center else None

        def clip_ref(x: np.ndarray, w: np.ndarray | None, tau=tau, it=iterations, c=c) -> Any:
            return None, ref.ref_centered_clipping(x, w, tau=tau, center=c, iterations=it)

        kwargs: dict[str, Any] = {"tau": tau, "iterations": iterations}
        if use_center:
            kwargs["center"] = torch.from_numpy(center)
        cases.append(
            (
                f"clip-tau{tau}-it{iterations}-c{use_center}-w{weighted}",
                Case(centered_clipping, clip_ref, 6, kwargs=kwargs, weighted=weighted, outliers=1),
            )
        )
    return [pytest.param(case, id=name) for name, case in cases]


def _one(result: tuple[int, np.ndarray]) -> tuple[tuple[int, ...], np.ndarray]:
    return (result[0],), result[1]


def _inputs(case: Case, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    rng = np.random.default_rng(seed)
    if case.integer_valued:
        x = rng.integers(-1, 2, size=(case.n, case.d)).astype(np.float64)
    else:
        x = rng.normal(size=(case.n, case.d))
        bad = rng.choice(case.n, size=case.outliers, replace=False)
        x[bad] = x[bad] * 3.0 + 8.0
    w = rng.uniform(0.5, 3.0, size=case.n) if case.weighted else None
    return x, w


@pytest.mark.parametrize("chunk", [None, 10], ids=["one-block", "tiny-blocks"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", _cases())
def test_rule_matches_reference(
    case: Case, dtype: torch.dtype, chunk: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # prepare
    if chunk is not None:  # blocks of a column or two: exercises every chunk boundary
        monkeypatch.setattr(base, "DEFAULT_CHUNK_ELEMENTS", chunk)
    x_np, w_np = _inputs(case, seed=case.n * 31 + case.d)
    updates = torch.from_numpy(x_np).to(dtype)
    weights = None if w_np is None else torch.from_numpy(w_np).to(dtype)
    before = updates.clone()
    exact_inputs = updates.to(torch.float64).numpy()  # the values the rule actually sees
    exact_weights = None if weights is None else weights.to(torch.float64).numpy()
    kwargs = {
        k: (v.to(dtype) if isinstance(v, torch.Tensor) else v) for k, v in case.kwargs.items()
    }
    # execute
    result = case.rule(updates, weights, **kwargs)
    expected_selected, expected = case.reference(exact_inputs, exact_weights)
    # assert
    assert torch.equal(updates, before), "input was modified"
    assert result.aggregate.dtype == dtype
    assert result.aggregate.device == updates.device
    assert result.aggregate.shape == (case.d,)
    tol = 1e-6 if dtype == torch.float32 else 1e-10
    scale = max(1.0, float(np.abs(exact_inputs).max()))
    np.testing.assert_allclose(
        result.aggregate.to(torch.float64).numpy(), expected, rtol=0, atol=tol * scale
    )
    if expected_selected is not None:
        assert result.selected == expected_selected
