"""Every numeric or string parameter of every registered strategy, set out of range from a
config: the run is either prepared or refused with a ``ConfigError`` naming a field, before
Ray starts. Never another exception (which the CLI would print as a traceback, after Ray).

Measured before (issue "One declared contract per component"): ``krum num_malicious_nodes=-1``
and ``fedtrimmedavg beta=0.7`` got past validation and crashed inside the Ray run.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from flower_suite.simulations import ConfigError, load_config, prepare
from flower_suite.strategies import STRATEGIES

BUILTIN = sorted(n for n in STRATEGIES if STRATEGIES.get(n).__module__.startswith("flower_suite"))
# What a config must give these strategies besides the swept parameter.
BASE: dict[str, list[str]] = {
    "crfl": ["strategy.rho=1.0"],
    "detox": ["num_clients=9", "partition.num_partitions=3"],
    "draco": ["num_clients=9"],
}
INT_VALUES = (-1, 0, 10**9)
FLOAT_VALUES = (-1.0, 0.0, 1e308, math.nan, math.inf, -math.inf)
FIELDS = ("strategy", "clients_per_round", "num_clients", "secagg")


def _literal(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return repr(value) if not isinstance(value, str) else f"'{value}'"


def _sweep() -> list[tuple[str, str, Any]]:
    cases = []
    for name in BUILTIN:
        for key, param in STRATEGIES.parameters(name).items():
            annotation = str(param.annotation)
            if annotation in ("int", "int | None"):
                cases += [(name, key, v) for v in INT_VALUES]
            elif annotation in ("float", "float | None"):
                cases += [(name, key, v) for v in FLOAT_VALUES]
            elif annotation == "str":
                cases.append((name, key, "no-such-value"))
    return cases


CASES = _sweep()


def test_the_sweep_covers_every_strategy() -> None:
    assert {name for name, _, _ in CASES} == set(BUILTIN)
    assert len(CASES) > 300


@pytest.mark.parametrize(
    "name,key,value", CASES, ids=[f"{n}.{k}={_literal(v)}" for n, k, v in CASES]
)
def test_out_of_range_parameter_is_prepared_or_refused_naming_a_field(
    name: str, key: str, value: Any
) -> None:
    overrides = [f"strategy.name={name}", *BASE.get(name, []), f"strategy.{key}={_literal(value)}"]
    try:
        prepare(load_config("digits_fedavg", overrides))
    except ConfigError as err:
        assert str(err).startswith(FIELDS), str(err)
    else:
        # A non-finite number is never a valid setting.
        assert not (isinstance(value, float) and not math.isfinite(value)), overrides
