"""The DRACO strategy through its aggregate path with real Flower Messages (spec draco.md §8).

Honest replies are encoded from per-partition vectors ``x_k = [n_k v_k, n_k]`` with the
coefficients the strategy sent (``sum_k W[k, j] x_k``, ascending k, as the client does), so the
reference is the formula ``w + sum n_k v_k / sum n_k`` computed directly in float64.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app import Error as FlowerError
from strategy_fixtures import fake_grid

from flower_suite.coding import encode_message
from flower_suite.simulations import ConfigError, load_config, prepare
from flower_suite.strategies import STRATEGIES, Draco
from flower_suite.strategies.contract import ContractError, ExperimentSizes, capabilities_of
from flower_suite.wire.keys import (
    DRACO_COEF_IMAG,
    DRACO_COEF_REAL,
    DRACO_MESSAGE_KEY,
    DRACO_SHARDS,
    DRACO_TRAIN,
)

pytestmark = pytest.mark.usefixtures("task_identity")

SHAPES = {"w": (4, 3), "b": (3,)}
D = 15


def _global(dtype: type = np.float64) -> ArrayRecord:
    rng = np.random.default_rng(7)
    return ArrayRecord({k: Array(rng.normal(size=s).astype(dtype)) for k, s in SHAPES.items()})


def _vectors(p: int, seed: int = 0) -> np.ndarray:
    """(P, D + 1): row k is x_k = [n_k v_k, n_k]."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(20, 60, size=p).astype(np.float64)
    updates = rng.normal(0, 0.05, size=(p, D))
    return np.hstack([counts[:, None] * updates, counts[:, None]])


def _configure(strategy: Draco, p: int, base: ArrayRecord) -> list[Message]:
    nodes = [1000 + 17 * i for i in range(p)]
    return list(strategy.configure_train(1, base, ConfigRecord({"lr": 0.1}), fake_grid(nodes)))


def _reply(instruction: Message, message: np.ndarray | None, *, error: bool = False) -> Message:
    if error:
        return Message(FlowerError(code=0, reason="client crashed"), reply_to=instruction)
    arrays = {"real": Array(np.ascontiguousarray(message.real))}
    if np.iscomplexobj(message):
        arrays["imag"] = Array(np.ascontiguousarray(message.imag))
    metrics = MetricRecord({"num-examples": 10, "train-loss": 1.0})
    content = RecordDict({DRACO_MESSAGE_KEY: ArrayRecord(arrays), "metrics": metrics})
    return Message(content=content, reply_to=instruction)


def _honest(instruction: Message, vectors: np.ndarray, cyclic: bool) -> np.ndarray:
    config = instruction.content.config_records["config"]
    pairs = [
        (k, complex(re, im))
        for k, re, im in zip(
            config[DRACO_SHARDS], config[DRACO_COEF_REAL], config[DRACO_COEF_IMAG], strict=True
        )
    ]
    return encode_message(pairs, vectors, complex_valued=cyclic)


def _attacked(message: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "constant":
        return np.full_like(message, -100.0)
    if kind == "reverse":
        return -100.0 * message
    if kind == "colluding":
        return np.full_like(message, 3.25)
    return message + rng.normal(0, 1.0, size=message.shape)


def _round(strategy, instructions, vectors, cyclic, bad=(), kind="reverse", drop=()):
    """Replies of every node; indices in ``bad`` attacked, in ``drop`` missing."""
    rng = np.random.default_rng(1)
    replies = []
    for msg in instructions:
        j = strategy.index[msg.metadata.dst_node_id]
        if j in drop:
            continue
        message = _honest(msg, vectors, cyclic)
        replies.append(_reply(msg, _attacked(message, kind, rng) if j in bad else message))
    return replies


def _flat(record: ArrayRecord) -> np.ndarray:
    return np.concatenate([record[k].numpy().ravel() for k in SHAPES]).astype(np.float64)


def _expected_step(vectors: np.ndarray) -> np.ndarray:
    total = vectors.sum(axis=0)
    return total[:-1] / total[-1]


def _node(strategy: Draco, j: int) -> int:
    return next(n for n, i in strategy.index.items() if i == j)


# -- allocation -------------------------------------------------------------------------------


@pytest.mark.parametrize("code,p,s", [("repetition", 9, 1), ("cyclic", 7, 2)])
def test_every_partition_goes_to_2s_plus_1_nodes(code: str, p: int, s: int) -> None:
    strategy = Draco(code=code, max_adversaries=s, min_available_nodes=p)
    instructions = _configure(strategy, p, _global())
    assert {m.metadata.message_type for m in instructions} == {DRACO_TRAIN}
    holders = np.zeros(p, dtype=int)
    for msg in instructions:
        shards = msg.content.config_records["config"][DRACO_SHARDS]
        assert len(shards) == 2 * s + 1
        holders[shards] += 1
    assert (holders == 2 * s + 1).all()
    # Indices follow sorted node ids, not the order the grid lists them.
    assert list(strategy.index) == sorted(strategy.index)


# -- exact recovery ---------------------------------------------------------------------------

REPETITION_CASES = [
    (3, 1, (1,)),
    (9, 1, (4,)),
    (15, 2, (0, 1)),  # both in one group of 5
    (15, 2, (3, 12)),
]


@pytest.mark.parametrize("p,s,bad", REPETITION_CASES)
@pytest.mark.parametrize("kind", ["constant", "reverse", "random", "colluding"])
def test_repetition_recovers_the_adversary_free_model_bit_for_bit(p, s, bad, kind) -> None:
    base = _global(np.float32)
    vectors = _vectors(p)
    clean_strategy = Draco(code="repetition", max_adversaries=s, min_available_nodes=p)
    instructions = _configure(clean_strategy, p, base)
    clean, _ = clean_strategy.aggregate_train(
        1, _round(clean_strategy, instructions, vectors, False)
    )
    strategy = Draco(code="repetition", max_adversaries=s, min_available_nodes=p)
    instructions = _configure(strategy, p, base)
    arrays, metrics = strategy.aggregate_train(
        1, _round(strategy, instructions, vectors, False, bad=bad, kind=kind)
    )
    assert arrays is not None and clean is not None
    for key in SHAPES:
        assert arrays[key].numpy().tobytes() == clean[key].numpy().tobytes()
    step = _flat(clean) - _flat(base)
    np.testing.assert_allclose(step, _expected_step(vectors), atol=1e-6)
    assert strategy.records[1].located_indices == sorted(bad)
    assert metrics["draco-located"] == len(bad) and metrics["draco-skipped"] == 0


CYCLIC_CASES = [
    (3, 1, (2,)),
    (5, 2, (0, 4)),
    (9, 2, (3,)),
    (9, 4, (1, 2, 5, 8)),
    (15, 3, (0, 7, 14)),
    (15, 7, tuple(range(0, 14, 2))),
]


@pytest.mark.parametrize("p,s,bad", CYCLIC_CASES)
@pytest.mark.parametrize("kind", ["constant", "reverse", "random"])
def test_cyclic_recovers_the_exact_update_within_1e_9(p, s, bad, kind) -> None:
    base = _global(np.float64)
    vectors = _vectors(p, seed=p)
    strategy = Draco(code="cyclic", max_adversaries=s, min_available_nodes=p)
    instructions = _configure(strategy, p, base)
    arrays, _ = strategy.aggregate_train(
        1, _round(strategy, instructions, vectors, True, bad=bad, kind=kind)
    )
    assert arrays is not None, strategy.records[1].skipped
    expected = _expected_step(vectors)
    step = _flat(arrays) - _flat(base)
    assert np.linalg.norm(step - expected) <= 1e-9 * np.linalg.norm(expected)
    assert strategy.records[1].located_indices == sorted(bad)


@pytest.mark.parametrize("code,p,s", [("repetition", 9, 1), ("cyclic", 9, 2)])
def test_shuffled_reply_order_gives_the_same_model(code: str, p: int, s: int) -> None:
    base = _global()
    vectors = _vectors(p)
    results = []
    for order in (np.arange(p), np.random.default_rng(3).permutation(p)):
        strategy = Draco(code=code, max_adversaries=s, min_available_nodes=p)
        replies = _round(
            strategy, _configure(strategy, p, base), vectors, code == "cyclic", bad=(1,)
        )
        arrays, _ = strategy.aggregate_train(1, [replies[i] for i in order])
        results.append(_flat(arrays))
    if code == "repetition":
        assert results[0].tobytes() == results[1].tobytes()
    else:
        np.testing.assert_allclose(results[0], results[1], rtol=1e-12, atol=1e-14)


REASONS = {"nan": "non-finite", "shape": "shape", "error": "error reply"}


@pytest.mark.parametrize("code", ["repetition", "cyclic"])
@pytest.mark.parametrize("corruption", sorted(REASONS))
def test_missing_failed_and_malformed_replies_count_as_adversaries(code, corruption) -> None:
    """One missing reply plus one NaN, wrong-shape or error reply: s = 2 tolerates both, and
    each is located with its reason."""
    p, s, cyclic = 10 if code == "repetition" else 9, 2, code == "cyclic"
    base = _global()
    vectors = _vectors(p)
    strategy = Draco(code=code, max_adversaries=s, min_available_nodes=p)
    instructions = _configure(strategy, p, base)
    replies = _round(strategy, instructions, vectors, cyclic, drop=(0,))
    position = [strategy.index[r.metadata.src_node_id] for r in replies].index(5)
    instruction = next(m for m in instructions if strategy.index[m.metadata.dst_node_id] == 5)
    honest = _honest(instruction, vectors, cyclic)
    corrupted = honest.copy()
    corrupted[3] = np.nan
    bad = {"nan": corrupted, "shape": honest[:-1], "error": None}[corruption]
    replies[position] = _reply(instruction, bad, error=corruption == "error")
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None, strategy.records[1].skipped
    step = _flat(arrays) - _flat(base)
    np.testing.assert_allclose(step, _expected_step(vectors), rtol=1e-9, atol=1e-12)
    record = strategy.records[1]
    assert record.located_indices == [0, 5]
    assert record.erased[_node(strategy, 0)] == "missing"
    assert REASONS[corruption] in record.erased[_node(strategy, 5)]


MUTATIONS = ("no_record", "extra_array", "float32", "no_imag", "huge", "duplicate", "unknown_node")


@pytest.mark.parametrize("code", ["repetition", "cyclic"])
@pytest.mark.parametrize("mutation", MUTATIONS)
def test_one_mutated_reply_is_located_and_the_update_stays_exact(code, mutation) -> None:
    p, cyclic = 9, code == "cyclic"
    base = _global()
    vectors = _vectors(p)
    strategy = Draco(code=code, max_adversaries=1, min_available_nodes=p)
    instructions = _configure(strategy, p, base)
    replies = _round(strategy, instructions, vectors, cyclic)
    target = next(r for r in replies if strategy.index[r.metadata.src_node_id] == 4)
    record = target.content.array_records[DRACO_MESSAGE_KEY]
    real = record["real"].numpy()
    if mutation == "no_record":
        del target.content[DRACO_MESSAGE_KEY]
    elif mutation == "extra_array":
        record["extra"] = Array(real.copy())
    elif mutation == "float32":
        record["real"] = Array(real.astype(np.float32))
    elif mutation == "no_imag" and cyclic:
        del record["imag"]
    elif mutation == "no_imag":  # the repetition code's analogue: an empty message
        record["real"] = Array(real[:0])
    elif mutation == "huge":
        record["real"] = Array(real * 1e200)
    elif mutation == "duplicate":
        replies.append(_reply(instructions[0], real * 0.0))
        target = replies[-1]
    elif mutation == "unknown_node":
        stranger = Message(RecordDict(), dst_node_id=1, message_type=DRACO_TRAIN)
        replies.append(_reply(stranger, real))
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None, strategy.records[1].skipped
    step = _flat(arrays) - _flat(base)
    np.testing.assert_allclose(step, _expected_step(vectors), rtol=1e-9, atol=1e-12)
    expected = [] if mutation == "unknown_node" else [strategy.index[target.metadata.src_node_id]]
    assert strategy.records[1].located_indices == expected


def test_max_norm_erases_a_large_message_with_its_reason() -> None:
    base = _global()
    vectors = _vectors(9)
    strategy = Draco(code="repetition", max_adversaries=1, min_available_nodes=9, max_norm=1e3)
    replies = _round(strategy, _configure(strategy, 9, base), vectors, False, bad=(6,))
    arrays, _ = strategy.aggregate_train(1, replies)  # -100 x the honest message: norm > 1e3
    assert arrays is not None
    assert strategy.records[1].erased == {_node(strategy, 6): "norm above bound"}
    assert dict(strategy.records[1].rejected) == {_node(strategy, 6): "norm above bound"}


# -- beyond s: skipped, never corrupted --------------------------------------------------------


@pytest.mark.parametrize("code,p,s", [("repetition", 9, 1), ("cyclic", 9, 2), ("cyclic", 15, 3)])
def test_more_than_s_adversaries_skip_the_round(code, p, s, caplog) -> None:
    base = _global()
    vectors = _vectors(p)
    strategy = Draco(code=code, max_adversaries=s, min_available_nodes=p)
    instructions = _configure(strategy, p, base)
    bad = tuple(range(s + 1))  # s + 1 distinct random perturbations, one group for repetition
    with caplog.at_level(logging.WARNING):
        arrays, metrics = strategy.aggregate_train(
            1, _round(strategy, instructions, vectors, code == "cyclic", bad=bad, kind="random")
        )
    assert arrays is None
    assert metrics["draco-skipped"] == 1
    assert strategy.records[1].skipped.startswith("decoding failed")
    assert "skipped, global model unchanged" in caplog.text


def test_too_many_missing_replies_skip_the_round() -> None:
    base = _global()
    strategy = Draco(code="cyclic", max_adversaries=1, min_available_nodes=5)
    replies = _round(strategy, _configure(strategy, 5, base), _vectors(5), True, drop=(1, 3))
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is None and "missing" in strategy.records[1].skipped


def test_aggregate_without_configure_skips_instead_of_raising() -> None:
    arrays, metrics = Draco().aggregate_train(1, [])
    assert arrays is None and metrics is None


# -- contract: refused before the run ---------------------------------------------------------


def test_contract_declares_server_assigned_data_and_full_participation() -> None:
    caps = capabilities_of(STRATEGIES.get("draco"))
    assert caps.server_assigned_data and caps.full_participation and caps.simulation_only
    assert not caps.secure_aggregation


@pytest.mark.parametrize(
    "kwargs,sizes,field",
    [
        ({}, (9, 6), "clients_per_round"),
        ({"code": "repetition", "max_adversaries": 1}, (10, 10), "num_clients"),
        ({"code": "cyclic", "max_adversaries": 1}, (32, 32), "num_clients"),
        ({"code": "cyclic", "max_adversaries": 3}, (6, 6), "strategy.max_adversaries"),
    ],
)
def test_sizes_that_do_not_fit_the_code_are_refused(kwargs, sizes, field) -> None:
    with pytest.raises(ContractError) as err:
        Draco(**kwargs).check_sizes(ExperimentSizes(*sizes))
    assert err.value.field == field


@pytest.mark.parametrize(
    "overrides,prefix",
    [
        (["num_clients=9", "clients_per_round=6"], "clients_per_round"),
        (["num_clients=10"], "num_clients"),
        (["num_clients=9", "strategy.code='hamming'"], "strategy.code"),
        (["num_clients=9", "strategy.max_adversaries=-1"], "strategy.max_adversaries"),
        (["num_clients=9", "strategy.max_norm=0.0"], "strategy.max_norm"),
    ],
)
def test_configs_are_refused_before_ray(overrides, prefix) -> None:
    with pytest.raises(ConfigError) as err:
        prepare(load_config("digits_fedavg", ["strategy.name=draco", *overrides]))
    assert str(err.value).startswith(prefix), str(err.value)


def test_a_fitting_config_is_prepared() -> None:
    prepare(load_config("digits_fedavg", ["strategy.name=draco", "num_clients=9"]))
