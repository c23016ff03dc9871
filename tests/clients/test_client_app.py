"""The torch ClientApp, invoked directly with real Messages (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    RecordDict,
)

from flower_suite.clients import ClientData, client_seed, make_client_app, train_config_from
from flower_suite.data import load_digits_split
from flower_suite.models import MLP
from flower_suite.training import TrainConfig

TRAIN, TEST = load_digits_split()


def _app(test: bool = True, **kwargs):
    data = ClientData(train=TRAIN.subset(np.arange(200)), test=TEST if test else None)
    return make_client_app(lambda ctx: MLP(), lambda ctx: data, **kwargs)


def _context(partition_id: int = 0) -> Context:
    return Context(
        run_id=1,
        node_id=7,
        node_config={"partition-id": partition_id, "num-partitions": 10},
        state=RecordDict(),
        run_config={},
    )


def _message(model: torch.nn.Module, message_type: str, config: dict | None = None) -> Message:
    content = RecordDict(
        {"arrays": ArrayRecord(model.state_dict()), "config": ConfigRecord(config or {})}
    )
    return Message(content=content, dst_node_id=7, message_type=message_type)


def test_train_reply_has_arrays_and_metrics(task_identity: None) -> None:
    """A train reply carries one ArrayRecord with the model's keys and num-examples."""
    # Prepare
    torch.manual_seed(0)
    model = MLP()
    app = _app()
    # Execute
    reply = app(_message(model, MessageType.TRAIN, {"server-round": 1, "lr": 0.1}), _context())
    # Assert
    assert not reply.has_error(), reply.error
    arrays = reply.content["arrays"]
    assert list(arrays.keys()) == list(model.state_dict().keys())
    assert reply.content["metrics"]["num-examples"] == 200
    assert np.isfinite(reply.content["metrics"]["train-loss"])
    before = model.state_dict()["net.1.weight"].numpy()
    after = arrays.to_torch_state_dict()["net.1.weight"].numpy()
    assert not np.allclose(before, after), "training must change the weights"


def test_train_is_deterministic_per_round_and_partition(task_identity: None) -> None:
    """Same round and partition -> bitwise equal models; another round -> different ones."""
    torch.manual_seed(0)
    model = MLP()
    app = _app()

    def weights(server_round: int, partition: int) -> np.ndarray:
        msg = _message(model, MessageType.TRAIN, {"server-round": server_round})
        reply = app(msg, _context(partition))
        return reply.content["arrays"].to_torch_state_dict()["net.1.weight"].numpy()

    np.testing.assert_array_equal(weights(3, 1), weights(3, 1))
    assert not np.array_equal(weights(3, 1), weights(4, 1))
    assert client_seed(0, 3, 1) != client_seed(0, 3, 2)


def test_evaluate_reply(task_identity: None) -> None:
    """Evaluate replies carry only metrics: loss, accuracy in [0, 1] and num-examples."""
    reply = _app()(_message(MLP(), MessageType.EVALUATE), _context())
    assert not reply.has_error(), reply.error
    assert "arrays" not in reply.content
    metrics = reply.content["metrics"]
    assert metrics["num-examples"] == len(TEST)
    assert 0.0 <= metrics["eval-acc"] <= 1.0


# Exceptions in a handler become error replies in Flower's runtime (the strategy then
# drops that client); called directly, the app raises them.


def test_evaluate_without_test_data_raises(task_identity: None) -> None:
    """A client without evaluation data fails instead of reporting a made-up metric."""
    with pytest.raises(ValueError, match="no evaluation data"):
        _app(test=False)(_message(MLP(), MessageType.EVALUATE), _context())


def test_mismatched_arrays_raise(task_identity: None) -> None:
    """Arrays of another architecture are refused with a message naming the array."""
    with pytest.raises(ValueError, match=r"net\.1\.weight.*shape"):
        _app()(_message(MLP(hidden=(32,)), MessageType.TRAIN), _context())


def test_missing_arrays_raise(task_identity: None) -> None:
    """Arrays lacking a model tensor are refused, naming what is missing."""
    partial = MLP()
    msg = _message(partial, MessageType.TRAIN)
    del msg.content["arrays"]["net.3.bias"]
    with pytest.raises(ValueError, match=r"missing \['net\.3\.bias'\]"):
        _app()(msg, _context())


def test_diverging_training_fails_loudly(task_identity: None) -> None:
    """A learning rate that blows up raises instead of sending NaN weights."""
    msg = _message(MLP(), MessageType.TRAIN, {"lr": 1e12, "momentum": 0.0})
    with pytest.raises(FloatingPointError, match="diverged"):
        _app()(msg, _context())


def test_train_config_from_merges_and_validates() -> None:
    """Round config overrides defaults (kebab-case keys); invalid values raise."""
    defaults = TrainConfig(lr=0.05, local_epochs=1)
    merged = train_config_from(ConfigRecord({"lr": 0.2, "local-epochs": 3}), defaults)
    assert merged.lr == 0.2 and merged.local_epochs == 3 and merged.batch_size == 32
    assert train_config_from(None, defaults) is defaults
    with pytest.raises(ValueError, match="batch_size"):
        train_config_from(ConfigRecord({"batch-size": 0}), defaults)


def test_pinned_cpu_device(task_identity: None) -> None:
    """device='cpu' trains on the CPU whatever is visible."""
    reply = _app(device="cpu")(_message(MLP(), MessageType.TRAIN), _context())
    assert not reply.has_error(), reply.error


def test_server_assigned_partition_gives_identical_replicas(task_identity: None) -> None:
    """Two nodes told to train on the same data partition return bitwise-equal models.

    This is what DETOX's majority vote relies on: the server controls data assignment and
    the batch seed follows the data partition, not the node.
    """
    seen: list[int] = []
    splits = {p: TRAIN.subset(np.arange(p * 100, p * 100 + 100)) for p in range(3)}

    def data_fn(ctx: Context) -> ClientData:
        seen.append(int(ctx.node_config["partition-id"]))
        return ClientData(train=splits[int(ctx.node_config["partition-id"])])

    app = make_client_app(lambda ctx: MLP(), data_fn)
    torch.manual_seed(0)
    model = MLP()

    def weights(node_partition: int, data_partition: int) -> np.ndarray:
        config = {"server-round": 2, "data-partition": data_partition}
        reply = app(_message(model, MessageType.TRAIN, config), _context(node_partition))
        return reply.content["arrays"].to_torch_state_dict()["net.1.weight"].numpy()

    a, b, c = weights(0, 2), weights(1, 2), weights(1, 1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert seen == [2, 2, 1]
