"""How many inputs each rule needs, and its parameters' ranges: declared once, asked everywhere.

The strategies (``min_replies``), the defenses that run a named inner rule and the config layer
all ask these functions; nobody restates ``2f + 3``. Ranges are checked here too, so a bad
parameter fails when the strategy is built, not in the middle of a round.

- Krum / Multi-Krum (Blanchard et al., 2017): ``n >= 2f + 3``; ``num_neighbours`` k needs
  ``n >= k + 1``; Multi-Krum's ``num_nodes_to_select`` m needs ``n >= m``.
- Bulyan (El Mhamdi et al., 2018): ``n >= 4f + 3``.
- Trimmed mean (Yin et al., 2018): ``2 floor(beta n) < n``.
- Every other rule: one input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeGuard


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def check_count(value: object, *, name: str, owner: str, minimum: int) -> None:
    """``value`` must be an int >= ``minimum``."""
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, not {value!r}")


def check_optional_count(value: object, *, name: str, owner: str, minimum: int) -> None:
    """``value`` must be None or an int >= ``minimum``."""
    if value is not None:
        check_count(value, name=name, owner=owner, minimum=minimum)


def check_beta(beta: object, *, owner: str) -> None:
    """Trimmed-mean fraction: a number in [0, 0.5)."""
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 <= beta < 0.5:
        raise ValueError(f"{owner}: beta must be in [0, 0.5), not {beta!r}")


def krum_min_inputs(
    num_malicious_nodes: int,
    num_nodes_to_select: int | None = None,
    num_neighbours: int | None = None,
) -> int:
    """Fewest inputs Krum / Multi-Krum accept with these parameters."""
    needed = 2 * num_malicious_nodes + 3
    if num_nodes_to_select is not None:
        needed = max(needed, num_nodes_to_select)
    if num_neighbours is not None:
        needed = max(needed, num_neighbours + 1)
    return needed


def bulyan_min_inputs(num_malicious_nodes: int) -> int:
    return 4 * num_malicious_nodes + 3


def trimmed_mean_min_inputs(beta: float) -> int:
    """Smallest n with ``2 floor(beta n) < n`` (exists for every beta < 0.5)."""
    n = 1
    while 2 * math.floor(beta * n) >= n:
        n += 1
    return n


def check_rule_params(rule: str, params: Mapping[str, Any], *, owner: str) -> None:
    """Range checks for the parameters of a named rule (``flower_suite.aggregation``)."""
    key = rule.strip().lower().replace("-", "_")
    if "num_malicious_nodes" in params:
        check_count(
            params["num_malicious_nodes"], name="num_malicious_nodes", owner=owner, minimum=0
        )
    if key in ("krum", "multi_krum"):
        check_optional_count(
            params.get("num_neighbours"), name="num_neighbours", owner=owner, minimum=1
        )
        check_optional_count(
            params.get("num_nodes_to_select"), name="num_nodes_to_select", owner=owner, minimum=1
        )
    if key == "trimmed_mean" and "beta" in params:
        check_beta(params["beta"], owner=owner)


def min_inputs(rule: str, params: Mapping[str, Any]) -> int:
    """Fewest inputs the named rule accepts with ``params``."""
    key = rule.strip().lower().replace("-", "_")
    f = int(params.get("num_malicious_nodes", 0))
    if key == "krum":
        return krum_min_inputs(f, None, params.get("num_neighbours"))
    if key == "multi_krum":
        return krum_min_inputs(f, params.get("num_nodes_to_select"), params.get("num_neighbours"))
    if key == "bulyan":
        return bulyan_min_inputs(f)
    if key == "trimmed_mean":
        return trimmed_mean_min_inputs(float(params.get("beta", 0.0)))
    return 1


# Fewest inputs with which a rule's output stays bounded by the honest inputs when f of them
# are arbitrary (its breakdown point): Krum's and Bulyan's theorems, and an honest majority
# for the coordinate-wise median, the trimmed mean (beta n >= f) and the geometric median.
_TOLERATING = {
    "krum": lambda f: 2 * f + 3,
    "multi_krum": lambda f: 2 * f + 3,
    "bulyan": lambda f: 4 * f + 3,
    "median": lambda f: 2 * f + 1,
    "trimmed_mean": lambda f: 2 * f + 1,
    "geometric_median": lambda f: 2 * f + 1,
}


def min_inputs_tolerating(rule: str, num_byzantine: int) -> int:
    """Fewest inputs with which ``rule`` tolerates ``num_byzantine`` arbitrary ones.

    The trimmed mean also needs ``floor(beta n) >= f``; the mean tolerates none (it raises
    for ``f > 0``), like every rule not listed here.
    """
    check_count(num_byzantine, name="num_byzantine", owner=rule, minimum=0)
    key = rule.strip().lower().replace("-", "_")
    if key in _TOLERATING:
        return int(_TOLERATING[key](num_byzantine))
    if num_byzantine == 0:
        return 1
    raise ValueError(
        f"{rule} has no Byzantine tolerance (known robust rules: {', '.join(_TOLERATING)})"
    )
