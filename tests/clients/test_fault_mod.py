"""The fault-injection mod (a testing aid): each fault changes exactly what it says, only on
training messages of the chosen round, and an unknown fault is refused by name. Its effect on
a real federation is tested in tests/deployment/test_deployment_faults.py."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from flower_suite.clients import ClientData, make_client_app
from flower_suite.clients.fault_mod import fault_mod, wants_fault
from flower_suite.data import load_digits_split
from flower_suite.models import MLP

TRAIN, TEST = load_digits_split()
DATA = ClientData(train=TRAIN.subset(np.arange(100)), test=TEST)
APP = make_client_app(lambda ctx: MLP(), lambda ctx: DATA, device="cpu")

pytestmark = pytest.mark.usefixtures("task_identity")  # Messages outside a run need ids


def _context(**fault: object) -> Context:
    return Context(
        run_id=1,
        node_id=7,
        node_config={"partition-id": 0, "num-partitions": 10, **fault},
        state=RecordDict(),
        run_config={},
    )


def _message(message_type: str = MessageType.TRAIN, server_round: int = 1) -> Message:
    torch.manual_seed(0)
    content = RecordDict(
        {
            "arrays": ArrayRecord(MLP().state_dict()),
            "config": ConfigRecord({"server-round": server_round, "lr": 0.1}),
        }
    )
    return Message(content=content, dst_node_id=7, message_type=message_type)


def _arrays(reply: Message) -> dict[str, np.ndarray]:
    return {k: a.numpy() for k, a in reply.content["arrays"].items()}


def test_nan_fills_the_first_float_array_and_keeps_the_rest() -> None:
    plain = _arrays(APP(_message(), _context()))
    reply = fault_mod(_message(), _context(fault="nan"), APP)
    bad = _arrays(reply)
    first = next(iter(plain))
    assert bad[first].shape == plain[first].shape and np.isnan(bad[first]).all()
    for name in list(plain)[1:]:
        np.testing.assert_array_equal(bad[name], plain[name])


def test_shape_drops_one_element_of_the_first_float_array() -> None:
    plain = _arrays(APP(_message(), _context()))
    bad = _arrays(fault_mod(_message(), _context(fault="shape"), APP))
    first = next(iter(plain))
    assert bad[first].shape == (plain[first].size - 1,)
    np.testing.assert_array_equal(bad[first], plain[first].reshape(-1)[:-1])


def test_error_raises_so_flower_sends_an_error_reply() -> None:
    with pytest.raises(RuntimeError, match="injected error"):
        fault_mod(_message(), _context(fault="error"), APP)


def test_slow_sleeps_then_answers_like_the_plain_app() -> None:
    start = time.monotonic()
    reply = fault_mod(_message(), _context(fault="slow", **{"fault-delay": 0.3}), APP)
    assert time.monotonic() - start >= 0.3
    plain = _arrays(APP(_message(), _context()))
    for name, values in _arrays(reply).items():
        np.testing.assert_array_equal(values, plain[name])


def test_only_training_messages_of_the_chosen_round(tmp_path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "fired"
    ctx = _context(fault="error", **{"fault-round": 2, "fault-marker": str(marker)})
    assert wants_fault(ctx) and not wants_fault(_context())
    assert not fault_mod(_message(server_round=1), ctx, APP).has_error()
    assert not fault_mod(_message(MessageType.EVALUATE, server_round=2), ctx, APP).has_error()
    assert not marker.exists()
    with pytest.raises(RuntimeError):
        fault_mod(_message(server_round=2), ctx, APP)
    assert marker.exists()


def test_unknown_fault_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="fault: unknown fault 'crash'"):
        fault_mod(_message(), _context(fault="crash"), APP)


def test_bad_round_or_delay_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="fault-round: expected a number"):
        fault_mod(_message(), _context(fault="nan", **{"fault-round": "two"}), APP)
    with pytest.raises(ValueError, match="fault-delay: expected a number"):
        fault_mod(_message(), _context(fault="slow", **{"fault-delay": -1}), APP)
