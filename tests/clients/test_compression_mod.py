"""The compression client mod around the real torch ClientApp, with real Messages (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from flower_suite.clients import ClientData, make_client_app
from flower_suite.clients.compression_mod import (
    compression_seed,
    make_compression_mod,
    update_tensors,
)
from flower_suite.compression import (
    COMPRESSORS,
    Compressor,
    NoCompression,
    SpectralAtomo,
    layouts_of,
)
from flower_suite.data import load_digits_split
from flower_suite.models import MLP
from flower_suite.wire.keys import BYTES_METRIC, COMPRESSED_KEY, PAYLOAD_STYPE, RESIDUAL_STATE_KEY

TRAIN, TEST = load_digits_split()
DATA = ClientData(train=TRAIN.subset(np.arange(200)), test=TEST)


def _app(compressor: Compressor | None = None, **mod_kwargs):
    mods = [] if compressor is None else [make_compression_mod(compressor, **mod_kwargs)]
    return make_client_app(lambda ctx: MLP(), lambda ctx: DATA, device="cpu", mods=mods)


def _context(partition_id: int = 0) -> Context:
    return Context(
        run_id=1,
        node_id=7,
        node_config={"partition-id": partition_id, "num-partitions": 10},
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


def _payload(reply: Message) -> dict[str, bytes]:
    record = reply.content.array_records[COMPRESSED_KEY]
    assert all(a.stype == PAYLOAD_STYPE and a.dtype == "uint8" for a in record.values())
    return {name: array.data for name, array in record.items()}


def _tensors(record: ArrayRecord) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(a.numpy().copy()) for k, a in record.items()}


def test_none_payload_rebuilds_the_trained_model_bitwise(task_identity: None) -> None:
    """With ``none``, the update a server re-derives from ``received + decoded`` (what every
    aggregator computes: reply - received) is the plain app's update, bit for bit. (The model
    ``received + decoded`` itself may differ from the trained one in the last bit where
    ``trained - received`` rounds; the update never does.) The reply carries the payload
    instead of "arrays", its size as a metric, and the rest of the app's reply as is."""
    msg = _message()
    plain = _app()(msg, _context())
    reply = _app(NoCompression())(msg, _context())
    assert not reply.has_error(), reply.error
    assert list(reply.content.array_records) == [COMPRESSED_KEY]
    payload = _payload(reply)
    received = _tensors(msg.content["arrays"])
    update = NoCompression().decompress(payload, layouts_of(received))
    for name, trained in _tensors(plain.content["arrays"]).items():
        rebuilt = received[name] + update[name]
        assert torch.equal(rebuilt - received[name], trained - received[name]), name
        torch.testing.assert_close(rebuilt, trained, rtol=0, atol=1e-7)
    metrics = reply.content["metrics"]
    assert metrics[BYTES_METRIC] == sum(len(m) for m in payload.values())
    assert metrics["num-examples"] == plain.content["metrics"]["num-examples"] == 200
    assert reply.content["client-info"]["partition-id"] == 0


@pytest.mark.parametrize("message_type", [MessageType.EVALUATE, MessageType.QUERY])
def test_other_messages_pass_through(task_identity: None, message_type: str) -> None:
    msg = _message(message_type)
    plain = _app()(msg, _context())
    reply = _app(COMPRESSORS.create("qsgd", bits=2))(msg, _context())
    assert COMPRESSED_KEY not in reply.content
    assert dict(reply.content.metric_records) == dict(plain.content.metric_records)
    assert dict(reply.content.config_records) == dict(plain.content.config_records)


def test_draws_repeat_per_seed_round_and_partition(task_identity: None) -> None:
    """Same (seed, round, partition): the same bytes; another seed: other draws."""
    app = _app(COMPRESSORS.create("qsgd", bits=2))
    first = _payload(app(_message(server_round=3), _context(1)))
    assert _payload(app(_message(server_round=3), _context(1))) == first
    other_seed = _app(COMPRESSORS.create("qsgd", bits=2), seed=5)
    assert _payload(other_seed(_message(server_round=3), _context(1))) != first
    seeds = {compression_seed(0, r, p) for r in range(3) for p in range(3)}
    assert len(seeds) == 9 and compression_seed(0, 1, 2) == compression_seed(0, 1, 2)


def test_spectral_payload_is_smaller_and_decodes_to_the_layout(task_identity: None) -> None:
    msg = _message()
    reply = _app(SpectralAtomo(budget=2))(msg, _context())
    payload = _payload(reply)
    received = _tensors(msg.content["arrays"])
    dense = sum(t.numel() * t.element_size() for t in received.values())
    assert sum(map(len, payload.values())) < dense / 4
    decoded = SpectralAtomo(budget=2).decompress(payload, layouts_of(received))
    assert layouts_of(decoded) == layouts_of(received)


def test_integer_buffers_are_sent_as_is() -> None:
    """Float tensors: trained - received; integer buffers (BatchNorm counters): trained."""
    received = ArrayRecord(
        {"w": Array(np.ones((2, 2), np.float32)), "n": Array(np.array(5, dtype=np.int64))}
    )
    trained = ArrayRecord(
        {"w": Array(np.full((2, 2), 3.0, np.float32)), "n": Array(np.array(9, dtype=np.int64))}
    )
    update = update_tensors(received, trained)
    assert torch.equal(update["w"], torch.full((2, 2), 2.0))
    assert update["n"].dtype == torch.int64 and int(update["n"]) == 9
    with pytest.raises(ValueError, match="missing"):
        update_tensors(received, ArrayRecord({"w": trained["w"]}))


def test_error_feedback_keeps_the_untransmitted_part(task_identity: None) -> None:
    """The residual kept in Context.state is the update minus what the message carried."""
    compressor = SpectralAtomo(budget=1)
    msg = _message()
    plain = _app()(msg, _context())
    context = _context()
    reply = _app(compressor, error_feedback=True)(msg, context)
    received = _tensors(msg.content["arrays"])
    update = {k: v - received[k] for k, v in _tensors(plain.content["arrays"]).items()}
    decoded = compressor.decompress(_payload(reply), layouts_of(received))
    residual = _tensors(context.state.array_records[RESIDUAL_STATE_KEY])
    assert set(residual) == set(update)
    for name, value in update.items():
        torch.testing.assert_close(decoded[name] + residual[name], value, rtol=0, atol=1e-6)
    assert any(float(r.abs().max()) > 0 for r in residual.values())
    # the next round starts from the stored residual and replaces it
    _app(compressor, error_feedback=True)(_message(server_round=2), context)
    after = _tensors(context.state.array_records[RESIDUAL_STATE_KEY])
    assert any(not torch.equal(after[k], residual[k]) for k in residual)
