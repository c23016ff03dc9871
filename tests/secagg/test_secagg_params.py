"""Parameter validation, aliases, resolution and the (k, t) search (spec sections 2-3, 12.7)."""

from __future__ import annotations

import math

import pytest

from flower_suite.secagg import SecAggConfig, SecAggParams, suggest_parameters


def _params(**overrides: object) -> SecAggParams:
    base: dict[str, object] = dict(n=10, k=5, t=3, m=3, c=1.0, T=256, mod_bits=32, W=10)
    base.update(overrides)
    return SecAggParams(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"c": 0.0}, "clipping_range"),
        ({"c": -1.0}, "clipping_range"),
        ({"c": math.inf}, "clipping_range"),
        ({"c": math.nan}, "clipping_range"),
        ({"T": 1}, "quantization_range"),
        ({"k": 4}, "num_shares"),  # even k < n
        ({"k": 11}, "num_shares"),  # k > n
        ({"k": 2, "t": 2}, "num_shares"),
        ({"t": 6}, "reconstruction_threshold"),  # t > k
        ({"t": 1}, "reconstruction_threshold"),
        ({"m": 1}, "min_num"),
        ({"m": 11}, "min_num"),
        ({"W": 0}, "max_weight"),
        ({"mod_bits": 65}, "modulus_range"),
        ({"mod_bits": 11}, "modulus_range"),  # 2**11 < n*W*T = 25600
        ({"n": 2, "k": 2, "t": 2, "m": 2}, "clients"),
    ],
)
def test_invalid_params_are_rejected_naming_the_parameter(overrides: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        _params(**overrides)


def test_overflow_check_reports_the_numbers() -> None:
    # n*W*T = 10 * 10 * 256 = 25600 > 2**14
    with pytest.raises(ValueError, match=r"M >= n\*W\*T = 25600"):
        _params(mod_bits=14)
    assert _params(mod_bits=15).modulus == 2**15  # 32768 >= 25600 is fine


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"clipping_range": 0}, "clipping_range"),
        ({"clipping_range": -2.0}, "clipping_range"),
        ({"modulus_range": 3 * 2**20}, "power of two"),
        ({"modulus_range": 2**65}, "2\\*\\*64"),
        ({"num_shares": 2}, "num_shares"),
        ({"num_shares": 1.5}, "num_shares"),
        ({"reconstruction_threshold": 1}, "reconstruction_threshold"),
        ({"min_frac": 0.0}, "min_frac"),
        ({"max_weight": 0}, "max_weight"),
        ({"max_weight": 2.5}, "max_weight"),
        ({"quantization_range": 1}, "quantization_range"),
    ],
)
def test_config_rejects_bad_settings_at_construction(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        SecAggConfig(**kwargs)


def test_aliases_map_to_flower_names() -> None:
    config = SecAggConfig.from_kwargs(
        share_num=5, threshold=3, target_range=2**10, mod_range=2**40, max_weights_factor=7
    )
    assert config == SecAggConfig(
        num_shares=5,
        reconstruction_threshold=3,
        quantization_range=2**10,
        modulus_range=2**40,
        max_weight=7,
    )
    with pytest.raises(ValueError, match="given twice"):
        SecAggConfig.from_kwargs(share_num=5, num_shares=5)
    with pytest.raises(ValueError, match="unknown"):
        SecAggConfig.from_kwargs(sharenum=5)


def test_resolution_of_fractions_defaults_and_modulus() -> None:
    # float num_shares: fraction of n, made odd (Flower's rule); default t = floor(k/2)+1
    p = SecAggConfig(num_shares=0.5, max_weight=1, quantization_range=2**16).resolve(20)
    assert (p.k, p.t, p.m) == (11, 6, 6)
    assert p.mod_bits == 32  # default at least 2**32
    # float threshold is a fraction of k; the least restrictive minimum wins
    p = SecAggConfig(reconstruction_threshold=0.6, min_num=8, min_frac=0.5).resolve(10)
    assert (p.k, p.t, p.m) == (10, 6, 5)
    # default M: smallest power of two >= n W T (here 100 * 1000 * 2**22 > 2**32)
    p = SecAggConfig().resolve(100)
    assert p.modulus >= 100 * 1000 * 2**22 > p.modulus // 2
    assert p.dtype.itemsize == 8
    with pytest.raises(ValueError, match="n\\*W\\*T"):
        SecAggConfig(modulus_range=2**24, max_weight=1).resolve(100)  # 100 * 2**22 > 2**24


def test_suggest_parameters_matches_reference_values_where_the_floor_does_not_bind() -> None:
    # reference values from the tests of Google's parameter finder (spec section 3): degree
    # 78, t <= 60; t = 60 of k = 79 is above the floor k/2, so the search is unchanged
    k, t = suggest_parameters(1000, 0.33, 0.05)
    assert k == 78 + 1
    assert 2 * t > k and t <= 60


@pytest.mark.parametrize(
    ("n", "gamma", "delta", "degree"),
    # Google's finder gives degree 72 (t <= 24) and 86 (t <= 29) here: thresholds far below
    # k/2, which a server lying about dropouts could exploit. With the floor t > k/2 the same
    # correctness target needs a denser graph.
    [(1000, 0.05, 0.33, 72), (10_000, 0.05, 0.33, 86)],
)
def test_suggest_parameters_raises_low_thresholds_to_the_floor(
    n: int, gamma: float, delta: float, degree: int
) -> None:
    k, t = suggest_parameters(n, gamma, delta)
    assert k > degree + 1 and k % 2 == 1
    assert t == k // 2 + 1  # the floor binds


def test_suggest_parameters_is_sparser_than_salvia_at_salvia_sizes() -> None:
    for n in (100, 300, 500):
        k, t = suggest_parameters(n, 0.05, 0.05)
        assert 13 <= k <= 29 and k % 2 == 1 and t > 2
        assert k < 51  # Salvia's 51/26 is conservative at these sizes


def test_suggest_parameters_validates() -> None:
    with pytest.raises(ValueError, match=r"0\.9"):
        suggest_parameters(100, 0.5, 0.5)
    with pytest.raises(ValueError, match="dropout_fraction"):
        suggest_parameters(100, 0.0, 1.0)
