"""One misbehaving party must not crash or bypass secure aggregation (regressions).

Each test reproduces a defect measured on the earlier code: a plaintext FedMA reply from a
secure client, an exception out of ``SecAggPlus.train_round`` caused by one client's unmask
reply or by zero weights, a round aborted by one invalid public key or one flipped share
byte, an unchecked unmasked sum, silently capped weights and unsafe thresholds accepted by
clients. Allowed outcomes: the exact aggregate over the honest survivors, a logged exclusion
of the offender, or a clean, recorded skipped round.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from secagg_harness import close_to, expected_model, make_grid, make_strategy

from flower_suite.clients.secagg_mod import RECORD_KEY, secagg_mod
from flower_suite.secagg import (
    SecAggConfig,
    SecAggError,
    SecAggParams,
    SetupRequest,
    Stage,
    suggest_parameters,
)
from flower_suite.secagg.messages import pack_blobs, pack_ids, unpack_blobs, unpack_ids
from flower_suite.secagg.quantize import client_weight
from flower_suite.simulations import load_config
from flower_suite.simulations.config import ConfigError

SMALL = ["rounds=1", "num_clients=6"]


def _train_message(message_type: str) -> Message:
    return Message(
        content=RecordDict({"config": ConfigRecord({})}), dst_node_id=5, message_type=message_type
    )


# -- defect 1: every training message type needs the protocol record -----------------------
@pytest.mark.parametrize("message_type", ["train", "train.fedma", "train.anything"])
def test_secure_client_refuses_every_plain_training_message(
    task_identity: None, message_type: str
) -> None:
    ctx = Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config={})
    trained: list[str] = []

    def handler(msg: Message, context: Context) -> Message:
        trained.append(msg.metadata.message_type)
        return msg

    with pytest.raises(SecAggError, match="refusing"):
        secagg_mod(_train_message(message_type), ctx, handler)
    assert trained == []  # the handler never ran, so nothing trained could leave


def test_secure_simulation_app_does_not_register_fedma_handlers() -> None:
    from flower_suite.simulations.engine.client_app import simulation_client_app
    from flower_suite.simulations.engine.task import ExperimentTask

    plain = simulation_client_app(ExperimentTask(load_config("digits_fedavg", SMALL)))
    secure_config = load_config("digits_fedavg", [*SMALL, "secagg.num_shares=5"])
    secure = simulation_client_app(ExperimentTask(secure_config))
    assert "train.fedma" in plain._registered_funcs
    assert not any("fedma" in name for name in secure._registered_funcs)


def test_fedma_with_secagg_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="secagg: strategy 'fedma'"):
        load_config("digits_fedavg", [*SMALL, "strategy.name=fedma", "secagg.num_shares=5"])


# -- defect 2: a forged unmask reply is excluded, never an exception --------------------------
def _repeat_first_owner(data: dict[str, Any]) -> dict[str, Any]:
    owners, shares = unpack_ids(data["b_owners"]), unpack_blobs(data["b_shares"])
    data["b_owners"] = pack_ids([*owners, owners[0]])
    data["b_shares"] = pack_blobs([*shares, shares[0]])
    return data


def _relabel_first_share(data: dict[str, Any]) -> dict[str, Any]:
    shares = unpack_blobs(data["b_shares"])
    index = int.from_bytes(shares[0][:2], "big")
    other = index % 6 + 1  # another holder's index: combine would see it twice
    shares[0] = other.to_bytes(2, "big") + shares[0][2:]
    data["b_shares"] = pack_blobs(shares)
    return data


@pytest.mark.parametrize("forge", [_repeat_first_owner, _relabel_first_share])
def test_forged_share_index_or_repeated_owner_is_excluded(task_identity: None, forge) -> None:
    grid, start = make_grid()
    grid.on_reply = lambda node, stage, data: (
        forge(data) if (node, stage) == (102, Stage.UNMASK) else data
    )
    strategy = make_strategy()
    arrays, _ = strategy.train_round(grid, 1, start, ConfigRecord({}))
    record = strategy.records[1]
    assert arrays is not None, record.aborted
    assert close_to(arrays, expected_model(grid, start, grid.updates))
    assert any(node == 102 and stage == "unmask" for node, stage, _ in record.errors)


# -- defect 3: zero total weight is a skipped round ------------------------------------------
def test_all_zero_weights_skip_the_round(task_identity: None) -> None:
    grid, start = make_grid()
    grid.weights = dict.fromkeys(grid.weights, 0)
    strategy = make_strategy()
    arrays, metrics = strategy.train_round(grid, 1, start, ConfigRecord({}))
    assert arrays is None and metrics is None
    assert "weight" in strategy.records[1].aborted


# -- defect 4: an invalid public key drops its owner only ------------------------------------
LOW_ORDER = [
    bytes(32),  # u = 0
    (1).to_bytes(32, "little"),  # u = 1, order 4
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),  # order 8
    (2**255 - 19).to_bytes(32, "little"),  # p: a non-canonical encoding of 0
]


@pytest.mark.parametrize("key", LOW_ORDER, ids=["zero", "one", "order8", "p"])
@pytest.mark.parametrize("field", ["c_pk", "s_pk"])
def test_low_order_public_key_drops_only_its_owner(
    task_identity: None, key: bytes, field: str
) -> None:
    grid, start = make_grid()

    def forge(node: int, stage: int, data: dict[str, Any]) -> dict[str, Any]:
        if (node, stage) == (103, Stage.SETUP):
            data[field] = key
        return data

    grid.on_reply = forge
    strategy = make_strategy()
    arrays, _ = strategy.train_round(grid, 1, start, ConfigRecord({}))
    record = strategy.records[1]
    assert arrays is not None, record.aborted
    assert 103 not in record.survivors and len(record.survivors) == 5
    assert close_to(arrays, expected_model(grid, start, record.survivors))
    assert any(node == 103 and "public key" in reason for node, _, reason in record.errors)


# -- defect 5: a share failing authentication is discarded, spare shares reconstruct ---------
def _flip_first_ciphertext(data: dict[str, Any]) -> dict[str, Any]:
    blobs = unpack_blobs(data["ciphertexts"])
    corrupted = bytearray(blobs[0])
    corrupted[-1] ^= 0x01
    blobs[0] = bytes(corrupted)
    data["ciphertexts"] = pack_blobs(blobs)
    return data


def test_one_flipped_share_byte_is_discarded_not_fatal(task_identity: None) -> None:
    grid, start = make_grid()
    grid.on_request = lambda node, stage, data: (
        _flip_first_ciphertext(data) if node in (101, 103) and stage == Stage.MASKED_INPUT else data
    )
    strategy = make_strategy(min_num=6)  # every client must survive: any dropout aborts
    arrays, _ = strategy.train_round(grid, 1, start, ConfigRecord({}))
    record = strategy.records[1]
    assert arrays is not None, record.aborted
    assert sorted(record.survivors) == sorted(grid.updates)
    assert close_to(arrays, expected_model(grid, start, grid.updates))
    # the server learns which holders had no valid share (they say so by omission)
    assert {node for node, stage, _ in record.errors if stage == "unmask"} == {101, 103}


# -- defect 6: the unmasked sum must lie in the range quantization allows --------------------
def test_out_of_range_sum_aborts_the_round(task_identity: None) -> None:
    grid, start = make_grid()

    def flip_high_bit(node: int, stage: int, data: dict[str, Any]) -> dict[str, Any]:
        if (node, stage) == (102, Stage.MASKED_INPUT):
            masked = bytearray(data["masked"])
            masked[4 * 5 + 3] ^= 0x80  # bit 31 of entry 5 (M = 2**32: 4 bytes per entry)
            data["masked"] = bytes(masked)
        return data

    grid.on_reply = flip_high_bit
    strategy = make_strategy()
    arrays, metrics = strategy.train_round(grid, 1, start, ConfigRecord({}))
    assert arrays is None and metrics is None
    assert "range" in strategy.records[1].aborted


# -- defect 7: one documented rule for weights: refuse, never cap or truncate ----------------
@pytest.mark.parametrize("weight", [150, 100.5, 12.5, -1, math.nan, math.inf, True])
def test_client_refuses_weights_outside_the_rule(weight: float) -> None:
    with pytest.raises(SecAggError, match="weight"):
        client_weight(weight, 100)


@pytest.mark.parametrize(("weight", "expected"), [(0, 0), (7, 7), (7.0, 7), (100, 100)])
def test_integral_weights_up_to_max_weight_are_accepted(weight: float, expected: int) -> None:
    assert client_weight(weight, 100) == expected


@pytest.mark.parametrize(("bad", "word"), [(150, "max_weight"), (12.5, "integer")])
def test_node_with_an_invalid_weight_is_excluded(task_identity: None, bad: float, word: str):
    grid, start = make_grid()
    grid.weights[104] = bad
    strategy = make_strategy()
    arrays, _ = strategy.train_round(grid, 1, start, ConfigRecord({}))
    record = strategy.records[1]
    assert arrays is not None and 104 not in record.survivors
    assert close_to(arrays, expected_model(grid, start, record.survivors))
    assert any(node == 104 and word in reason for node, _, reason in record.errors)


# -- defect 8: unsafe thresholds are refused by clients (and servers) -----------------------
def test_threshold_at_or_below_half_the_shares_is_refused() -> None:
    with pytest.raises(ValueError, match="reconstruction_threshold"):
        SecAggParams(n=100, k=100, t=2, m=2, c=1.0, T=256, mod_bits=32, W=1)
    with pytest.raises(ValueError, match="reconstruction_threshold"):
        SecAggParams(n=6, k=6, t=3, m=3, c=1.0, T=256, mod_bits=32, W=1)  # t = k/2
    with pytest.raises(ValueError, match="reconstruction_threshold"):
        SecAggConfig(num_shares=5, reconstruction_threshold=2).resolve(10)


def test_client_refuses_setup_with_a_threshold_of_2_of_100() -> None:
    safe = SecAggParams(n=100, k=100, t=51, m=51, c=1.0, T=256, mod_bits=32, W=1)
    data = SetupRequest(round_id=bytes(16), secure_id=1, params=safe).to_dict()
    data.update(p_t=2, p_m=2)
    with pytest.raises(SecAggError, match="reconstruction_threshold"):
        SetupRequest.from_dict(data)


def test_default_and_suggested_thresholds_are_above_half() -> None:
    for n in (3, 4, 6, 10, 51, 100):
        for shares in (1.0, 0.5, 3):
            p = SecAggConfig(num_shares=shares, max_weight=1).resolve(n)
            assert 2 * p.t > p.k, (n, shares, p.k, p.t)
    for n, gamma, delta in [(100, 0.05, 0.05), (500, 0.05, 0.05), (1000, 0.33, 0.05)]:
        k, t = suggest_parameters(n, gamma, delta)
        assert 2 * t > k, (n, k, t)
        assert k % 2 == 1 or k == n, (n, k, t)


def test_secure_client_mod_with_record_on_other_train_types_is_refused(
    task_identity: None,
) -> None:
    ctx = Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config={})
    msg = _train_message("train.fedma")
    msg.content[RECORD_KEY] = ConfigRecord({"stage": 0})
    with pytest.raises(SecAggError, match="train"):
        secagg_mod(msg, ctx, lambda m, c: m)
    evaluate = Message(
        content=RecordDict({"config": ConfigRecord({})}),
        dst_node_id=5,
        message_type=MessageType.EVALUATE,
    )
    assert secagg_mod(evaluate, ctx, lambda m, c: "evaluated") == "evaluated"  # type: ignore[comparison-overlap]
