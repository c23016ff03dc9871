"""The omniscient injector, over a local Grid that runs real ClientApps on real Messages."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp

from flower_suite.attacks import ATTACK_INFO_KEY, ByzantineInjector, FixedFrequency, alie, ipm
from flower_suite.clients import ClientData, make_client_app
from flower_suite.data import load_digits_split
from flower_suite.models import MLP
from flower_suite.simulations.engine.inprocess import InProcessGrid
from flower_suite.wire.updates import flat_update

TRAIN, TEST = load_digits_split()


def _app() -> ClientApp:
    def data_fn(ctx: Context) -> ClientData:
        p = int(ctx.node_config["partition-id"])
        return ClientData(train=TRAIN.subset(np.arange(p * 60, p * 60 + 60)), test=TEST)

    return make_client_app(lambda ctx: MLP(), data_fn, device="cpu")


def _round(message_type: str, server_round: int, nodes: Iterable[int]) -> list[Message]:
    torch.manual_seed(0)
    arrays = ArrayRecord(MLP().state_dict())
    config = ConfigRecord({"server-round": server_round, "lr": 0.1})
    return [
        Message(
            content=RecordDict({"arrays": arrays, "config": config}),
            dst_node_id=node,
            message_type=message_type,
            group_id=str(server_round),
        )
        for node in nodes
    ]


def _updates(replies: list[Message], sent: Message) -> dict[int, np.ndarray]:
    out = {}
    for reply in replies:
        partition = int(reply.content.config_records["client-info"]["partition-id"])
        out[partition] = flat_update(reply.content["arrays"], sent.content["arrays"])[0]
    return out


def test_alie_injection_rewrites_attackers_from_the_honest_updates(task_identity: None) -> None:
    """Partitions 1 and 4 (of 7) send mu - z sigma of the 5 honest updates, z = z(7, 2);
    honest replies are untouched and the attackers are marked."""
    # Prepare
    clean = InProcessGrid(_app(), 7)
    grid = ByzantineInjector(InProcessGrid(_app(), 7), "alie", [1, 4])
    messages = _round(MessageType.TRAIN, 2, clean.get_node_ids())
    honest = _updates(list(clean.send_and_receive(messages)), messages[0])
    # Execute
    replies = list(grid.send_and_receive(messages))
    # Assert
    got = _updates(replies, messages[0])
    honest_rows = torch.from_numpy(np.stack([honest[p] for p in (0, 2, 3, 5, 6)]))
    expected = alie(honest_rows, 7, 2).numpy()
    for p in (1, 4):
        np.testing.assert_allclose(got[p], expected, rtol=1e-5, atol=1e-6)
        assert not np.allclose(got[p], honest[p])
    for p in (0, 2, 3, 5, 6):
        np.testing.assert_array_equal(got[p], honest[p])
    marked = {
        int(r.content.config_records["client-info"]["partition-id"])
        for r in replies
        if ATTACK_INFO_KEY in r.content.config_records
    }
    assert marked == {1, 4}
    assert grid.records[-1].attackers == (1, 4) and grid.records[-1].num_honest == 5


def test_ipm_injection_and_inactive_rounds(task_identity: None) -> None:
    """IPM sends -eps * mean(honest); a non-attack round passes through unchanged."""
    grid = ByzantineInjector(
        InProcessGrid(_app(), 4), "ipm", FixedFrequency([0], every_k=2), epsilon=0.5
    )
    messages = _round(MessageType.TRAIN, 2, grid.get_node_ids())
    got = _updates(list(grid.send_and_receive(messages)), messages[0])
    honest = _updates(list(InProcessGrid(_app(), 4).send_and_receive(messages)), messages[0])
    expected = ipm(torch.from_numpy(np.stack([honest[p] for p in (1, 2, 3)])), 0.5).numpy()
    np.testing.assert_allclose(got[0], expected, rtol=1e-5, atol=1e-7)
    quiet = _round(MessageType.TRAIN, 3, grid.get_node_ids())
    replies = list(grid.send_and_receive(quiet))
    assert all(ATTACK_INFO_KEY not in r.content.config_records for r in replies)
    assert len(grid.records) == 1


def test_evaluate_replies_are_never_touched(task_identity: None) -> None:
    grid = ByzantineInjector(InProcessGrid(_app(), 3), "alie", [0], z=1.0)
    messages = _round(MessageType.EVALUATE, 2, grid.get_node_ids())
    replies = list(grid.send_and_receive(messages))
    clean = list(InProcessGrid(_app(), 3).send_and_receive(messages))
    for a, b in zip(replies, clean, strict=True):
        assert dict(a.content["metrics"]) == dict(b.content["metrics"])
        assert ATTACK_INFO_KEY not in a.content.config_records
    assert grid.records == []


def test_injector_forwards_the_grid_api() -> None:
    inner = InProcessGrid(_app(), 2)
    grid = ByzantineInjector(inner, "sign_flip", [0])
    assert list(grid.get_node_ids()) == list(inner.contexts)
    assert grid.contexts is inner.contexts  # extras of the wrapped grid stay reachable
    with pytest.raises(NotImplementedError):
        grid.push_messages([])


def test_a_train_message_without_a_round_is_refused_not_read_as_round_zero(
    task_identity: None,
) -> None:
    """Round 0 would silently run the attack schedule (and its seeds) for the wrong round."""
    from flower_suite.byzantine_injector import round_of

    message = Message(
        content=RecordDict({"config": ConfigRecord({"lr": 0.1})}),
        dst_node_id=1,
        message_type=MessageType.TRAIN,
        group_id="not-a-round",
    )
    with pytest.raises(ValueError, match="cannot tell the server round"):
        round_of(message)
    assert round_of(_round(MessageType.TRAIN, 3, [1])[0]) == 3
