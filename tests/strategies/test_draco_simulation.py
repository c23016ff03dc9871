"""DRACO end to end through the real engine (in process): digits, a small MLP, an attacker from
the ``[attack]`` machinery (spec draco.md section 8.9, on real data).

With at most ``s`` adversaries every round's update equals the adversary-free one, so the whole
trajectory does: bit for bit with the repetition code, to float32 rounding with the cyclic code.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flower_suite.simulations import load_config
from flower_suite.simulations.engine import DEFAULT_HOOKS, HookContext, prepare, run_in_process

# In-process node ids are 7001 + 13 p, so sorted node ids follow the partitions.
NODE_OF = {p: 7001 + 13 * p for p in range(9)}


def _run(overrides: list[str]) -> tuple[Any, Any]:
    config = load_config(
        "digits_fedavg",
        [
            "strategy.name=draco",
            "model.name=mlp",
            "client.local_epochs=1",
            "client.lr=0.1",
            *overrides,
        ],
    )
    captured: dict[str, Any] = {}

    def grab(ctx: HookContext) -> Any:
        captured["strategy"] = ctx.strategy
        return lambda server_round, arrays: {}

    result = run_in_process(config, hooks=[*DEFAULT_HOOKS, grab])
    return result, captured["strategy"]


def _flat(arrays: Any) -> np.ndarray:
    return np.concatenate([arrays[k].numpy().ravel() for k in arrays])


def test_repetition_with_one_reverse_gradient_attacker_equals_the_clean_run() -> None:
    sizes = ["num_clients=9", "rounds=3", "strategy.max_adversaries=1"]
    attack = ["attack.name=reverse_gradient", "attack.attackers=[2]"]
    clean, _ = _run(sizes)
    attacked, strategy = _run([*sizes, *attack])
    accuracy = [row["test-acc"] for row in attacked.rows]
    assert accuracy[-1] > accuracy[0] + 0.5, accuracy
    assert _flat(attacked.final_arrays).tobytes() == _flat(clean.final_arrays).tobytes()
    for server_round in (1, 2, 3):
        assert strategy.records[server_round].located == [NODE_OF[2]]
        assert attacked.rows[server_round]["rejected-nodes"] == [NODE_OF[2]]


def test_cyclic_with_one_constant_attacker_tracks_the_clean_run() -> None:
    sizes = ["num_clients=5", "rounds=3", "strategy.code='cyclic'", "strategy.max_adversaries=1"]
    attack = ["attack.name=constant", "attack.attackers=[4]", "attack.params.value=-100.0"]
    clean, _ = _run(sizes)
    attacked, strategy = _run([*sizes, *attack])
    accuracy = [row["test-acc"] for row in attacked.rows]
    assert accuracy[-1] > accuracy[0] + 0.5, accuracy
    np.testing.assert_allclose(_flat(attacked.final_arrays), _flat(clean.final_arrays), atol=1e-5)
    assert all(strategy.records[r].located == [NODE_OF[4]] for r in (1, 2, 3))


def test_beyond_s_every_round_is_skipped_and_the_model_never_moves() -> None:
    overrides = [
        "num_clients=5",
        "rounds=2",
        "strategy.code='cyclic'",
        "strategy.max_adversaries=1",
        "strategy.mode='gradient'",
        "attack.name=gaussian_noise",
        "attack.attackers=[0, 3]",
    ]
    result, strategy = _run(overrides)
    assert all(strategy.records[r].skipped.startswith("decoding failed") for r in (1, 2))
    accuracy = {row["test-acc"] for row in result.rows}
    assert len(accuracy) == 1  # rounds 0, 1, 2 evaluate the initial model
    config = load_config("digits_fedavg", ["strategy.name=draco", "model.name=mlp", *overrides])
    initial = prepare(config).build_model(seed=config.seed).state_dict()
    # Flower's Result holds no arrays when no round produced any; else they must be initial.
    if result.final_arrays is not None and len(result.final_arrays):
        for key, tensor in initial.items():
            assert result.final_arrays[key].numpy().tobytes() == tensor.numpy().tobytes()


def test_gradient_mode_learns() -> None:
    """One full-batch gradient step per round (the text's iteration), s = 1 over 3 nodes."""
    result, _ = _run(["num_clients=3", "rounds=3", "strategy.mode='gradient'", "client.lr=0.5"])
    accuracy = [row["test-acc"] for row in result.rows]
    assert accuracy[-1] > accuracy[0] + 0.2, accuracy
