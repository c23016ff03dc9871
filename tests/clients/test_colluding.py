"""Colluding ALIE from the colluders' own updates, through a real make_client_app ClientApp."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from flower_suite.attacks import ATTACK_INFO_KEY
from flower_suite.attacks.byzantine import BYZANTINE_ATTACKS, alie
from flower_suite.clients import ClientData, make_client_app
from flower_suite.clients.attacker import attack_context_mod
from flower_suite.clients.client_app import client_seed
from flower_suite.clients.colluding import float_state, load_float_state, make_colluding_train_fn
from flower_suite.data import load_digits_split
from flower_suite.models import MLP
from flower_suite.training import TrainConfig, train

TRAIN, _ = load_digits_split()
SEED, ROUND = 11, 3
COLLUDERS = (0, 2, 5)
CONFIG = TrainConfig(lr=0.1, local_epochs=1, batch_size=16)


def _data(partition: int) -> ClientData:
    return ClientData(train=TRAIN.subset(np.arange(60 * partition, 60 * partition + 60)))


def _context(partition: int) -> Context:
    return Context(
        run_id=1, node_id=100 + partition, node_config={"partition-id": partition},
        state=RecordDict(), run_config={},
    )  # fmt: skip


def _global() -> MLP:
    torch.manual_seed(0)
    return MLP()


def _message() -> Message:
    config = ConfigRecord({"server-round": ROUND, "lr": 0.1, "local-epochs": 1,
                           "batch-size": 16, "seed": SEED})  # fmt: skip
    content = RecordDict({"arrays": ArrayRecord(_global().state_dict()), "config": config})
    return Message(content=content, dst_node_id=7, message_type=MessageType.TRAIN)


def _app(z: float = 1.0):  # type: ignore[no-untyped-def]
    attack = BYZANTINE_ATTACKS.create("alie", source="own", z=z)
    train_fn = make_colluding_train_fn(
        attack, list(COLLUDERS), COLLUDERS, lambda ctx: _data(int(ctx.node_config["partition-id"])),
        seed=SEED,
    )  # fmt: skip
    return make_client_app(
        lambda ctx: MLP(), lambda ctx: _data(int(ctx.node_config["partition-id"])), device="cpu",
        seed=SEED, mods=[attack_context_mod], train_fn=train_fn,
    )  # fmt: skip


def _reference_update(partition: int) -> torch.Tensor:
    """What colluder ``partition`` computes honestly: plain training from the global model."""
    model = _global()
    origin = float_state(model)
    train(model, _data(partition).train, CONFIG, seed=client_seed(SEED, ROUND, partition),
          device=torch.device("cpu"))  # fmt: skip
    return float_state(model) - origin


def test_every_colluder_sends_alie_of_the_colluders_true_updates(task_identity: None) -> None:
    rows = torch.stack([_reference_update(p) for p in COLLUDERS])
    expected = float_state(_global()) + alie(rows, z=1.0)
    app = _app()
    replies = [app(_message(), _context(p)) for p in COLLUDERS]
    for reply in replies:
        model = MLP()
        model.load_state_dict(reply.content["arrays"].to_torch_state_dict())
        torch.testing.assert_close(float_state(model), expected, rtol=0, atol=1e-6)
        assert reply.content.config_records[ATTACK_INFO_KEY]["attack"] == "alie-colluding"
        assert reply.content["metrics"]["num-examples"] == 60
    # the attack moves against the colluders' mean by z standard deviations, not nowhere
    assert float(torch.linalg.norm(expected - float_state(_global()) - rows.mean(0))) > 1e-3


def test_a_partition_outside_the_pool_trains_honestly(task_identity: None) -> None:
    reply = _app()(_message(), _context(1))
    model = MLP()
    model.load_state_dict(reply.content["arrays"].to_torch_state_dict())
    honest = float_state(_global()) + _reference_update(1)
    torch.testing.assert_close(float_state(model), honest, rtol=0, atol=1e-6)
    assert ATTACK_INFO_KEY not in reply.content.config_records


def test_float_state_round_trips_and_refuses_a_wrong_length() -> None:
    model = _global()
    vector = float_state(model) + 1.0
    load_float_state(model, vector)
    torch.testing.assert_close(float_state(model), vector, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="entries"):
        load_float_state(model, vector[:-1])
