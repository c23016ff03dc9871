"""FedMA client handlers invoked directly with real Flower Messages (spec fedma.md §5-§6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

from flower_suite.clients import ClientData, make_client_app
from flower_suite.clients.client_app import CLIENT_INFO_KEY
from flower_suite.clients.fedma_client import (
    ASSIGNMENT_KEY,
    FEDMA_EVALUATE,
    FEDMA_INFO_KEY,
    FEDMA_TRAIN,
    add_fedma_handlers,
    fedma_state_key,
)
from flower_suite.data import load_digits_split
from flower_suite.matching.layerwise import install_global_layer
from flower_suite.matching.permutation import describe_model
from flower_suite.models import MLP
from flower_suite.training import TrainConfig

TRAIN, TEST = load_digits_split()
HIDDEN = (8, 6)  # layers: net.1 (8x64), net.3 (6x8), net.5 (10x6)


def _model() -> MLP:
    return MLP(in_features=64, hidden=HIDDEN, num_classes=10)


def _app():
    data = ClientData(train=TRAIN.subset(np.arange(120)), test=TEST)
    config = TrainConfig(local_epochs=1, lr=0.1, batch_size=16)
    app = make_client_app(lambda ctx: _model(), lambda ctx: data, defaults=config, device="cpu")
    add_fedma_handlers(app, lambda ctx: _model(), lambda ctx: data, defaults=config, device="cpu")
    return app


def _context(partition_id: int = 3) -> Context:
    return Context(
        run_id=1,
        node_id=7,
        node_config={"partition-id": partition_id},
        state=RecordDict(),
        run_config={},
    )


def _message(step: int, arrays: ArrayRecord | None = None, **config) -> Message:
    content = RecordDict(
        {
            "config": ConfigRecord(
                {"fedma-round": 1, "fedma-step": step, "server-round": step + 1, **config}
            )
        }
    )
    if arrays is not None:
        content["arrays"] = arrays
    return Message(content=content, dst_node_id=7, message_type=FEDMA_TRAIN)


def _global_layer(
    rng: np.random.Generator, shapes: dict[str, tuple[int, ...]], assign
) -> ArrayRecord:
    arrays = {k: Array(rng.normal(size=s).astype(np.float32)) for k, s in shapes.items()}
    arrays[ASSIGNMENT_KEY] = Array(np.asarray(assign, dtype=np.int64))
    return ArrayRecord(arrays)


def _stored(context: Context) -> dict[str, np.ndarray]:
    record = context.state.array_records[fedma_state_key(3)]
    return {k: record[k].numpy() for k in record}


def test_step_zero_trains_locally_and_uploads_layer_zero(task_identity: None) -> None:
    """Step 0 without arrays: seeded own init, reply = layer 0, class counts, client-info."""
    # Prepare
    app, context = _app(), _context()
    # Execute
    reply = app(_message(0), context)
    again = app(_message(0), _context())
    # Assert
    assert not reply.has_error()
    assert sorted(reply.content["arrays"]) == ["net.1.bias", "net.1.weight"]
    assert reply.content["arrays"]["net.1.weight"].numpy().shape == (8, 64)
    counts = reply.content.config_records[FEDMA_INFO_KEY]["class-counts"]
    assert counts == np.bincount(TRAIN.y[:120], minlength=10).tolist()
    assert reply.content.config_records[CLIENT_INFO_KEY]["partition-id"] == 3
    assert reply.content["metrics"]["num-examples"] == 120
    assert sorted(_stored(context)) == sorted(_model().state_dict())
    np.testing.assert_array_equal(  # same partition and seed: same init and batches
        reply.content["arrays"]["net.1.weight"].numpy(),
        again.content["arrays"]["net.1.weight"].numpy(),
    )


def test_frozen_layers_stay_bitwise_unchanged(task_identity: None) -> None:
    """Steps 1 and 2: installed global layers never change while the rest retrains (§5)."""
    # Prepare: step 0, then a global layer 0 of width 11 > 8 with an injective assignment.
    rng = np.random.default_rng(0)
    app, context = _app(), _context()
    app(_message(0), context)
    before = _stored(context)
    assign0 = np.array([10, 0, 3, 7, 1, 5, 9, 2])
    layer0 = _global_layer(rng, {"net.1.weight": (11, 64), "net.1.bias": (11,)}, assign0)
    # Execute: step 1
    reply1 = app(_message(1, layer0), context)
    after1 = _stored(context)
    # Assert: layer 0 is the global one, bit for bit; layer 1 grew on its input side, trained.
    for name in ("net.1.weight", "net.1.bias"):
        np.testing.assert_array_equal(after1[name], layer0[name].numpy())
    assert reply1.content["arrays"]["net.3.weight"].numpy().shape == (6, 11)
    assert after1["net.3.weight"].shape == (6, 11)
    assert not np.array_equal(after1["net.3.weight"][:, assign0], before["net.3.weight"])
    # Execute: step 2 (last layer), global layer 1 of width 7 over the grown input.
    assign1 = np.array([6, 0, 2, 4, 1, 3])
    layer1 = _global_layer(rng, {"net.3.weight": (7, 11), "net.3.bias": (7,)}, assign1)
    reply2 = app(_message(2, layer1), context)
    after2 = _stored(context)
    # Assert: layers 0 and 1 bitwise frozen, only the output layer moved.
    for name in ("net.1.weight", "net.1.bias"):
        np.testing.assert_array_equal(after2[name], layer0[name].numpy())
    for name in ("net.3.weight", "net.3.bias"):
        np.testing.assert_array_equal(after2[name], layer1[name].numpy())
    assert sorted(reply2.content["arrays"]) == ["net.5.bias", "net.5.weight"]
    assert after2["net.5.weight"].shape == (10, 7)
    assert not np.array_equal(after2["net.5.weight"][:, assign1], after1["net.5.weight"])


def test_aligned_input_side_keeps_the_function(task_identity: None) -> None:
    """Installing a permuted copy of its own layer 0 leaves the client's outputs unchanged."""
    app, context = _app(), _context()
    app(_message(0), context)
    state = _stored(context)
    perm = np.random.default_rng(1).permutation(8)  # global unit i = own unit perm[i]
    assign = np.argsort(perm)  # own unit l -> global position
    layer = ArrayRecord(
        {
            "net.1.weight": Array(state["net.1.weight"][perm]),
            "net.1.bias": Array(state["net.1.bias"][perm]),
            ASSIGNMENT_KEY: Array(assign.astype(np.int64)),
        }
    )
    layers = describe_model(_model())
    tensors = {k: layer[k].numpy() for k in ("net.1.weight", "net.1.bias")}
    aligned = install_global_layer(state, layers[0], layers[1], tensors, assign)
    x = torch.as_tensor(TEST.x[:16])
    own, new = _model(), _model()
    own.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
    new.load_state_dict({k: torch.as_tensor(v, dtype=torch.float32) for k, v in aligned.items()})
    torch.testing.assert_close(new(x), own(x), rtol=1e-5, atol=1e-6)


def test_step_out_of_order_is_a_clear_error(task_identity: None) -> None:
    """A step-n instruction without the client's step n-1 state fails loudly."""
    rng = np.random.default_rng(0)
    app = _app()
    layer0 = _global_layer(rng, {"net.1.weight": (8, 64), "net.1.bias": (8,)}, np.arange(8))
    with pytest.raises(ValueError, match="no FedMA state"):
        app(_message(1, layer0), _context())
    context = _context()
    app(_message(0), context)
    with pytest.raises(ValueError, match="out of order"):
        app(_message(2, layer0), context)


def test_step_zero_loads_a_reconstructed_model(task_identity: None) -> None:
    """Round >= 2: step 0 starts from the arrays the server sends (client size)."""
    torch.manual_seed(5)
    start = _model()
    app, context = _app(), _context()
    msg = _message(0, ArrayRecord(start.state_dict()), **{"fedma-round": 2, "lr": 1e-9})
    reply = app(msg, context)
    np.testing.assert_allclose(
        reply.content["arrays"]["net.1.weight"].numpy(),
        start.state_dict()["net.1.weight"].numpy(),
        atol=1e-6,
    )


def test_evaluate_handler_accepts_a_grown_model(task_identity: None) -> None:
    """evaluate.fedma rebuilds the model at the global widths."""
    grown = MLP(in_features=64, hidden=(13, 9), num_classes=10)
    content = RecordDict({"arrays": ArrayRecord(grown.state_dict()), "config": ConfigRecord({})})
    msg = Message(content=content, dst_node_id=7, message_type=FEDMA_EVALUATE)
    reply = _app()(msg, _context())
    assert reply.content["metrics"]["num-examples"] == len(TEST)
    assert 0.0 <= reply.content["metrics"]["eval-acc"] <= 1.0
