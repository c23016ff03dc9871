"""Norm-difference clipping (NDC) and its composition with aggregation rules."""

from __future__ import annotations

import defense_reference as ref
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flower_suite.aggregation import krum, multi_krum, weighted_mean
from flower_suite.defenses import DEFENSES, clip_to_norm, median, norm_clipping


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("n", "d", "max_norm"), [(1, 1, 0.5), (5, 7, 1.0), (12, 300, 3.0)])
def test_clip_matches_reference(dtype: torch.dtype, n: int, d: int, max_norm: float) -> None:
    """Every row equals the loop reference x_i / max(1, ||x_i|| / M)."""
    # Prepare
    gen = torch.Generator().manual_seed(n * d)
    updates = (torch.randn(n, d, generator=gen, dtype=torch.float64) * 0.3).to(dtype)
    # Execute
    result = clip_to_norm(updates, max_norm)
    # Assert
    expected = ref.clip(updates.double().numpy(), max_norm)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(result.updates.double().numpy(), expected, rtol=tol, atol=tol)
    assert result.updates.dtype == dtype
    norms = [ref.norm(r) for r in updates.double().numpy()]
    np.testing.assert_allclose(result.norms.numpy(), norms, rtol=1e-12)
    assert result.fraction_clipped == pytest.approx(np.mean([x > max_norm for x in norms]))


def test_spec_unit_norm_five_to_two_and_norm_one_unchanged() -> None:
    """Spec §9 check 9: M = 2 maps norm 5 to norm 2 (same direction), keeps norm 1."""
    updates = torch.tensor([[3.0, 4.0], [0.6, 0.8]])
    result = clip_to_norm(updates, 2.0)
    torch.testing.assert_close(result.updates[0], torch.tensor([1.2, 1.6]))
    assert torch.equal(result.updates[1], updates[1])
    assert result.clipped.tolist() == [True, False]
    assert result.scales[0].item() == pytest.approx(0.4)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.lists(st.floats(-1e3, 1e3, width=32), min_size=3, max_size=3), min_size=1, max_size=6
    ),
    max_norm=st.floats(1e-3, 1e3),
)
def test_clipping_never_increases_a_norm_and_keeps_small_rows(
    rows: list[list[float]], max_norm: float
) -> None:
    """||clip(x)|| <= min(||x||, M) (up to float32 rounding); rows inside the ball are bitwise
    copies; the input is not modified."""
    updates = torch.tensor(rows, dtype=torch.float32)
    before = updates.clone()
    result = clip_to_norm(updates, max_norm)
    assert torch.equal(updates, before)
    after = result.updates.double().norm(dim=1)
    original = updates.double().norm(dim=1)
    assert (after <= original * (1 + 1e-6) + 1e-30).all()
    assert (after <= max_norm * (1 + 1e-6)).all()
    inside = original <= max_norm
    assert torch.equal(result.updates[inside], updates[inside])


def test_tiny_differences_of_close_models_use_float64_norms() -> None:
    """Norms are exact even where float32 squares would underflow (1e-23 entries)."""
    updates = torch.full((2, 4), 1e-23, dtype=torch.float32)
    result = clip_to_norm(updates, 1e-24)
    assert result.fraction_clipped == 1.0
    assert result.updates.double().norm(dim=1).tolist() == pytest.approx([1e-24, 1e-24])


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "2"])
def test_bad_max_norm_raises(bad: object) -> None:
    with pytest.raises(ValueError, match="max_norm"):
        clip_to_norm(torch.ones(2, 2), bad)  # type: ignore[arg-type]


def test_nan_update_raises() -> None:
    updates = torch.ones(3, 2)
    updates[1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"norm_clipping: updates \[1\] contain NaN"):
        clip_to_norm(updates, 1.0)


def test_norm_clipping_composes_with_krum() -> None:
    """NDC + Krum = Krum on the clipped updates; a huge outlier is clipped and not chosen."""
    gen = torch.Generator().manual_seed(0)
    updates = torch.randn(7, 20, generator=gen, dtype=torch.float64) * 0.1
    updates[6] += 100.0
    result = norm_clipping(
        updates, max_norm=1.0, aggregation="krum", aggregation_kwargs={"num_malicious_nodes": 1}
    )
    expected = krum(clip_to_norm(updates, 1.0).updates, num_malicious_nodes=1)
    assert torch.equal(result.aggregate, expected.aggregate)
    assert result.selected == expected.selected and 6 not in result.selected
    assert result.info["max-input-norm"] > 400
    assert result.info["fraction-clipped"] == pytest.approx(1 / 7)


def test_norm_clipping_default_is_weighted_mean_of_clipped() -> None:
    updates = torch.tensor([[10.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    weights = torch.tensor([1.0, 2.0, 1.0])
    result = norm_clipping(updates, weights, max_norm=2.0)
    torch.testing.assert_close(
        result.aggregate, weighted_mean(clip_to_norm(updates, 2.0).updates, weights).aggregate
    )
    torch.testing.assert_close(result.aggregate, torch.tensor([0.5, 0.25]))
    assert result.info["median-norm"] == 1.0


def test_unknown_aggregation_missing_or_unknown_kwarg_is_refused() -> None:
    with pytest.raises(ValueError, match="krumm"):
        norm_clipping(torch.ones(3, 2), max_norm=1.0, aggregation="krumm")
    with pytest.raises(ValueError, match=r"aggregation_kwargs\.f"):
        norm_clipping(
            torch.ones(5, 2), max_norm=1.0, aggregation="krum", aggregation_kwargs={"f": 1}
        )
    with pytest.raises(ValueError, match=r"krum needs aggregation_kwargs\.num_malicious_nodes"):
        norm_clipping(torch.ones(5, 2), max_norm=1.0, aggregation="krum")


def test_median_of_even_length_averages_the_middle_values() -> None:
    assert median(torch.tensor([4.0, 1.0, 3.0, 2.0])) == 2.5
    assert median(torch.tensor([5.0, 1.0, 3.0])) == 3.0


def test_registry_names() -> None:
    for name in ("norm_clipping", "ndc", "weak_dp", "flame", "foolsgold", "crfl"):
        assert name in DEFENSES
    updates = torch.arange(8.0).reshape(4, 2)
    result = DEFENSES.create(
        "ndc",
        updates=updates,
        max_norm=1.0,
        aggregation="multi_krum",
        aggregation_kwargs={"num_malicious_nodes": 0},
    )
    expected = multi_krum(clip_to_norm(updates, 1.0).updates, num_malicious_nodes=0)
    assert torch.equal(result.aggregate, expected.aggregate)
