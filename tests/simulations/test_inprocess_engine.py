"""The in-process engine behaves like Flower's Ray engine towards misbehaving ClientApps.

Measured before: a ClientApp that raised ended the whole run, and ``timeout`` was ignored.
"""

from __future__ import annotations

import time

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from flower_suite.flower_compat import CLIENT_APP_RAISED_EXCEPTION
from flower_suite.simulations import load_config
from flower_suite.simulations.engine.inprocess import InProcessGrid, run_in_process


def _app(behaviour: dict[int, str]) -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        kind = behaviour.get(int(context.node_config["partition-id"]), "ok")
        if kind == "raise":
            raise RuntimeError("boom")
        if kind == "slow":
            time.sleep(3.0)
        return Message(RecordDict({"metrics": MetricRecord({"num-examples": 1})}), reply_to=msg)

    return app


def _messages(grid: InProcessGrid) -> list[Message]:
    return [
        Message(
            RecordDict({"config": ConfigRecord({"server-round": 1})}),
            dst_node_id=node,
            message_type=MessageType.TRAIN,
        )
        for node in grid.get_node_ids()
    ]


def test_a_raising_client_app_becomes_an_error_reply(task_identity: None) -> None:
    grid = InProcessGrid(_app({1: "raise"}), 3)
    replies = list(grid.send_and_receive(_messages(grid)))
    assert len(replies) == 3
    errors = [r for r in replies if r.has_error()]
    assert len(errors) == 1
    assert errors[0].error.code == CLIENT_APP_RAISED_EXCEPTION
    assert "boom" in errors[0].error.reason
    assert errors[0].metadata.src_node_id == list(grid.get_node_ids())[1]


def test_replies_after_the_timeout_are_missing(task_identity: None) -> None:
    grid = InProcessGrid(_app({0: "slow"}), 3)
    start = time.monotonic()
    replies = list(grid.send_and_receive(_messages(grid), timeout=0.5))
    assert time.monotonic() - start < 2.0
    assert [r.metadata.src_node_id for r in replies] == []  # the slow first one took it all
    replies = list(grid.send_and_receive(_messages(grid)[1:], timeout=5.0))
    assert len(replies) == 2 and not any(r.has_error() for r in replies)


def _nan_from_partition_zero(msg: Message, context: Context, call_next) -> Message:
    """A faulty client: partition 0's train replies carry NaN in every array."""
    reply = call_next(msg, context)
    if msg.metadata.message_type == MessageType.TRAIN and context.node_config["partition-id"] == 0:
        arrays = reply.content["arrays"]
        reply.content["arrays"] = ArrayRecord(
            {k: Array(np.full(a.shape, np.nan, dtype=a.dtype)) for k, a in arrays.items()}
        )
    return reply


def test_fedavg_run_with_a_nan_client_keeps_a_finite_model_and_trains() -> None:
    """Measured: plain FedAvg from our configs ended a run with a NaN model (exit 0)."""
    config = load_config("digits_fedavg", overrides=["rounds=3", "num_clients=4", "model.name=mlp"])
    result = run_in_process(config, client_mods=[_nan_from_partition_zero])
    assert result.final_arrays is not None
    for array in result.final_arrays.values():
        assert np.isfinite(array.numpy()).all()
    assert result.final["test-acc"] > 0.5
