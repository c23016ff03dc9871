"""LowRankSpec: the factorization as round-config data, and structure-only factorization."""

from __future__ import annotations

import pytest
import torch

from flower_suite.models import DigitsCNN, ResNet18, count_parameters
from flower_suite.models.lowrank import LowRankConv2d, LowRankLinear, factorize
from flower_suite.models.lowrank_spec import LowRankSpec, model_for_config


def _layout(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_structure_only_matches_svd_layout(ratio: float) -> None:
    model = ResNet18(stem_bn=False)
    keep = ("layers.0.0",)
    assert _layout(factorize(model, ratio, keep, svd_init=False)) == _layout(
        factorize(model, ratio, keep)
    )


def test_structure_only_skips_the_svd_but_builds_low_rank_layers() -> None:
    torch.manual_seed(0)
    model = DigitsCNN()
    fresh = factorize(model, 0.25, svd_init=False)
    svd = factorize(model, 0.25)
    assert isinstance(fresh.features[2], LowRankConv2d)
    assert isinstance(fresh.classifier[1], LowRankLinear)
    # Not the SVD factors: structure only.
    assert not torch.equal(fresh.classifier[1].u.weight, svd.classifier[1].u.weight)
    # Layers kept full-rank are copied either way.
    assert torch.equal(fresh.features[0].weight, model.features[0].weight)


def test_config_round_trip_and_absence() -> None:
    spec = LowRankSpec(0.25, ("layers.0.0", "linear"), keep_first_and_last=False)
    assert LowRankSpec.from_config(spec.to_config()) == spec
    assert LowRankSpec.from_config({"lr": 0.1}) is None
    assert LowRankSpec.from_config(None) is None
    model = DigitsCNN()
    assert model_for_config(model, {"lr": 0.1}) is model
    low = model_for_config(model, spec.to_config() | {"lowrank-keep": []})
    assert count_parameters(low) < count_parameters(model)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rank_ratio": 0.0}, "rank_ratio"),
        ({"rank_ratio": 1.5}, "rank_ratio"),
        ({"rank_ratio": 0.5, "keep_full_rank": "features"}, "keep_full_rank"),
    ],
)
def test_bad_specs_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LowRankSpec(**kwargs)


def test_unknown_kept_module_is_an_error_not_ignored() -> None:
    with pytest.raises(ValueError, match=r"keep_full_rank names no module.*'nope'"):
        factorize(DigitsCNN(), 0.25, ["nope"])
