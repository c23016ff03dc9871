"""DRACO's client handler invoked with real Flower Messages (spec draco.md section 7).

References are computed independently: ``update`` mode against ``flower_suite.training.train``
on a copy of the model, ``gradient`` mode against the closed-form softmax-regression gradient
``X^T (softmax(XW^T + b) - Y) / n``, and the coded message against ``sum_k W[k, j] x_k``.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from torch import nn

from flower_suite.attacks.byzantine import BYZANTINE_ATTACKS
from flower_suite.attacks.schedule import FixedPool
from flower_suite.clients import ClientData, make_client_app
from flower_suite.clients.client_app import client_seed
from flower_suite.clients.draco_client import DracoInstruction, add_draco_handlers
from flower_suite.coding import make_cyclic_code, make_repetition_code
from flower_suite.data import load_digits_split
from flower_suite.training import TrainConfig, train
from flower_suite.wire.keys import (
    ATTACK_INFO_KEY,
    DRACO_COEF_IMAG,
    DRACO_COEF_REAL,
    DRACO_COMPLEX,
    DRACO_FLOAT64,
    DRACO_INDEX,
    DRACO_MESSAGE_KEY,
    DRACO_MODE,
    DRACO_SHARDS,
    DRACO_TRAIN,
)

pytestmark = pytest.mark.usefixtures("task_identity")

TRAIN, TEST = load_digits_split()
P = 5
SHARDS = np.array_split(np.arange(240), 6)  # partition k: 40 digits
CONFIG = TrainConfig(local_epochs=1, lr=0.1, momentum=0.0, batch_size=16)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def _data(context: Context) -> ClientData:
    partition = int(context.node_config["partition-id"])
    return ClientData(train=TRAIN.subset(SHARDS[partition]), test=TEST)


def _app(**kwargs):
    app = make_client_app(lambda ctx: _model(), _data, defaults=CONFIG, device="cpu")
    add_draco_handlers(app, lambda ctx: _model(), _data, defaults=CONFIG, device="cpu", **kwargs)
    return app


def _context(partition_id: int) -> Context:
    return Context(
        run_id=1,
        node_id=50 + partition_id,
        node_config={"partition-id": partition_id},
        state=RecordDict(),
        run_config={},
    )


def _instruction(code, node: int, mode: str = "update", server_round: int = 1) -> Message:
    pairs = code.coefficients(node)
    config = ConfigRecord(
        {
            "server-round": server_round,
            "seed": 3,
            DRACO_INDEX: node,
            DRACO_SHARDS: [k for k, _ in pairs],
            DRACO_COEF_REAL: [c.real for _, c in pairs],
            DRACO_COEF_IMAG: [c.imag for _, c in pairs],
            DRACO_COMPLEX: hasattr(code, "encoding_matrix"),
            DRACO_MODE: mode,
            DRACO_FLOAT64: True,
        }
    )
    arrays = ArrayRecord(_model().state_dict())
    content = RecordDict({"arrays": arrays, "config": config})
    return Message(content=content, dst_node_id=50 + node, message_type=DRACO_TRAIN)


def _message(reply: Message) -> np.ndarray:
    record = reply.content.array_records[DRACO_MESSAGE_KEY]
    real = record["real"].numpy()
    return real + 1j * record["imag"].numpy() if "imag" in record else real


def _reference_vector(k: int, mode: str, server_round: int = 1) -> np.ndarray:
    """x_k = [n_k v_k, n_k] computed without the handler."""
    model = _model().double()
    data = TRAIN.subset(SHARDS[k])
    x = np.asarray(data.x, dtype=np.float64).reshape(len(data), -1)
    n = len(data)
    weight = model[1].weight.detach().numpy().copy()
    bias = model[1].bias.detach().numpy().copy()
    if mode == "gradient":  # closed-form softmax-regression gradient
        logits = x @ weight.T + bias
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        probs[np.arange(n), data.y] -= 1.0
        grad_w, grad_b = probs.T @ x / n, probs.mean(axis=0)
        update = np.concatenate([-CONFIG.lr * grad_w.ravel(), -CONFIG.lr * grad_b])
    else:
        local = copy.deepcopy(model)
        cast = dataclasses.replace(data, x=np.asarray(data.x, np.float64))
        train(local, cast, CONFIG, seed=client_seed(3, server_round, k), device=torch.device("cpu"))
        update = np.concatenate(
            [
                (local[1].weight.detach().numpy() - weight).ravel(),
                local[1].bias.detach().numpy() - bias,
            ]
        )
    return np.concatenate([n * update, [float(n)]])


@pytest.mark.parametrize("mode", ["update", "gradient"])
def test_repetition_message_is_the_sum_of_the_shard_vectors(mode: str) -> None:
    code = make_repetition_code(6, 1)  # groups {0,1,2}, {3,4,5}: node 4 holds shards 3, 4, 5
    reply = _app()(_instruction(code, 4, mode), _context(4))
    expected = sum(_reference_vector(k, mode) for k in (3, 4, 5))
    got = _message(reply)
    assert got.dtype == np.float64 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    assert reply.content["metrics"]["num-examples"] == 120


def test_replicas_are_bitwise_identical_in_float64() -> None:
    """Two nodes of one group, other partition ids: the repetition code's exact vote works."""
    code = make_repetition_code(3, 1)
    app = _app()
    first = _message(app(_instruction(code, 0), _context(0)))
    second = _message(app(_instruction(code, 2), _context(2)))
    assert first.tobytes() == second.tobytes()


def test_cyclic_message_uses_the_encoding_coefficients() -> None:
    code = make_cyclic_code(P, 1)
    node = 3  # holds partitions 3, 4, 0
    reply = _app()(_instruction(code, node, "gradient"), _context(node))
    expected = sum(
        code.encoding_matrix[k, node] * _reference_vector(k, "gradient") for k in (0, 3, 4)
    )
    got = _message(reply)
    assert np.iscomplexobj(got)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


def test_an_active_attacker_sends_the_attacked_coded_message() -> None:
    code = make_repetition_code(3, 1)
    attack = BYZANTINE_ATTACKS.create("reverse_gradient", scale=100.0)
    app = _app(attack=attack, schedule=FixedPool((1,)))
    honest = app(_instruction(code, 0), _context(0))
    bad = app(_instruction(code, 1), _context(1))
    np.testing.assert_array_equal(_message(bad), -100.0 * _message(honest))
    assert ATTACK_INFO_KEY in bad.content.config_records
    assert ATTACK_INFO_KEY not in honest.content.config_records


def test_attack_and_schedule_come_together() -> None:
    with pytest.raises(ValueError, match="together"):
        _app(attack=BYZANTINE_ATTACKS.create("constant", value=-100.0))


@pytest.mark.parametrize(
    "key,value,match",
    [
        (DRACO_SHARDS, [0, 0, 1], "distinct"),
        (DRACO_COEF_REAL, [1.0], "one coefficient per shard"),
        (DRACO_SHARDS, "0,1,2", "list of int"),
        (DRACO_MODE, "newton", "draco-mode"),
    ],
)
def test_a_malformed_instruction_is_refused_naming_the_key(key, value, match) -> None:
    config = _instruction(make_repetition_code(3, 1), 0).content.config_records["config"]
    config[key] = value
    with pytest.raises(ValueError, match=match):
        DracoInstruction.from_config(config)
    app = _app()
    msg = _instruction(make_repetition_code(3, 1), 0)
    msg.content.config_records["config"][key] = value
    with pytest.raises(ValueError, match=match):
        app(msg, _context(0))
