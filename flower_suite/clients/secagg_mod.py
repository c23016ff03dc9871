"""Client mod for secure aggregation (SecAgg / SecAgg+) around any Message-API train handler.

Spec ``secagg.md`` section 9. Every protocol message is a ``train`` message whose content holds
a ConfigRecord ``"secagg"`` (the dict of a :mod:`flower_suite.secagg.messages` message). The mod
answers stages 0-2 and 4 itself; in stage 3 it decrypts the shares, calls the wrapped handler
(the user's training), turns the reply into the update ``reply arrays - global arrays``, and
replaces the reply by the masked vector: **no ArrayRecord and, by default, no MetricRecord leave
the client** (Flower's mod returns the example count and metrics in clear). The protocol state
lives in ``Context.state`` as a ConfigRecord of ints and bytes (no pickle).

Every training message without the ``"secagg"`` record is refused (``require_secagg``): any
message type starting with ``train`` (``train``, ``train.fedma``, ``train.<action>``), so no
handler registered for another training action (FedMA's layer steps return a trained layer and
a label histogram) can send a plaintext update from a secure client. The protocol itself runs
over plain ``train`` messages only; a protocol record on another training type is refused too.
A client that detects a problem (stage out of order, unsafe parameters, an invalid weight)
raises; Flower returns an error reply and the server treats the client as dropped. A single
share that fails authentication is discarded instead (see ``SecAggClient.receive_shares``).

Weights follow one rule (``flower_suite.secagg.quantize.client_weight``): the example count is
contributed as is if it is an integer in ``[0, max_weight]``, and refused otherwise (the client
drops out of the round with an error naming the rule), never capped or truncated.

Usage::

    app = make_client_app(model_fn, data_fn, mods=[secagg_mod])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    ConfigRecordValues,
    Context,
    Message,
    MessageType,
    RecordDict,
)

from flower_suite.flower_compat import ClientAppCallable, Mod
from flower_suite.secagg import (
    MaskedInputReply,
    MaskedInputRequest,
    RandomSource,
    SecAggClient,
    SecAggError,
    SetupRequest,
    ShareKeysRequest,
    Stage,
    UnmaskRequest,
)
from flower_suite.secagg.messages import Message as ProtocolMessage
from flower_suite.wire.keys import ARRAYS_KEY, METRICS_IN_CLEAR, RECORD_KEY, WEIGHT_KEY

STATE_KEY = "secagg-state"  # ConfigRecord in Context.state

WeightFn = Callable[[RecordDict, str], float]


def default_weight(content: RecordDict, weight_key: str) -> float:
    """The example count the training handler reported (``metrics[weight_key]``), as is: the
    protocol refuses it unless it is an integer in ``[0, max_weight]``."""
    for record in content.metric_records.values():
        if weight_key in record:
            value = record[weight_key]
            if isinstance(value, list):
                # the wording of the weight rule (secagg.quantize.client_weight)
                raise SecAggError(f"weight ({weight_key}) must be a number, got {value!r}")
            return value
    raise SecAggError(f"the train reply has no metric {weight_key!r} to weight the update by")


def unit_weight(content: RecordDict, weight_key: str) -> float:
    """Weight every client 1: with ``max_weight=1``, the unweighted mean of the updates."""
    return 1


def _is_training(message_type: str) -> bool:
    # "train" and every "train.<action>": any of them may return a trained model
    return message_type.startswith(MessageType.TRAIN)


def flat_update(global_arrays: ArrayRecord, local_arrays: ArrayRecord) -> np.ndarray:
    """``local - global`` as one float64 vector, arrays in the order the server sent them (the
    server unflattens in the same order)."""
    if list(local_arrays.keys()) != list(global_arrays.keys()):
        missing = sorted(set(global_arrays) - set(local_arrays))
        extra = sorted(set(local_arrays) - set(global_arrays))
        if missing or extra:
            raise SecAggError(
                f"trained arrays differ from the server's: missing {missing}, extra {extra}"
            )
    parts = []
    for key, array in global_arrays.items():
        before = array.numpy()
        after = local_arrays[key].numpy()
        if after.shape != before.shape:
            raise SecAggError(f"array {key!r} has shape {after.shape}, server sent {before.shape}")
        parts.append((after.astype(np.float64) - before.astype(np.float64)).reshape(-1))
    return np.concatenate(parts) if parts else np.zeros(0)


@dataclass(frozen=True)
class _StageOptions:
    weight_fn: WeightFn
    passthrough_records: tuple[str, ...]


def _masked_input(
    client: SecAggClient,
    msg: Message,
    context: Context,
    call_next: ClientAppCallable,
    data: dict[str, ConfigRecordValues],
    content: RecordDict,
    options: _StageOptions,
) -> MaskedInputReply:
    """Stage 3: shares first (a bad request fails before training), then train, then mask."""
    client.receive_shares(MaskedInputRequest.from_dict(data))
    trained = call_next(msg, context)
    if trained.has_error():
        raise SecAggError(f"local training failed: {trained.error.reason}")
    arrays_key = str(data.get(ARRAYS_KEY, "arrays"))
    weight_key = str(data.get(WEIGHT_KEY, "num-examples"))
    if arrays_key not in msg.content.array_records:
        raise SecAggError(f"the train message has no ArrayRecord {arrays_key!r}")
    if arrays_key not in trained.content.array_records:
        raise SecAggError(f"the train reply has no ArrayRecord {arrays_key!r}")
    update = flat_update(
        msg.content.array_records[arrays_key], trained.content.array_records[arrays_key]
    )
    reply = client.masked_input(update, options.weight_fn(trained.content, weight_key))
    for name in options.passthrough_records:
        if name in trained.content.config_records:
            content[name] = trained.content.config_records[name]
    if data.get(METRICS_IN_CLEAR):
        for name, record in trained.content.metric_records.items():
            content[name] = record
    return reply


def make_secagg_mod(
    *,
    weight_fn: WeightFn = default_weight,
    require_secagg: bool = True,
    passthrough_records: Sequence[str] = ("client-info",),
    source: RandomSource | None = None,
) -> Mod:
    """Build the mod.

    Parameters
    ----------
    weight_fn : callable (default: the reply's ``metrics[weight_key]``)
        ``(train reply content, weight_key) -> example count``; an integer in
        ``[0, max_weight]``, else the client refuses the round (never capped).
        :func:`unit_weight` gives the unweighted mean (with ``max_weight=1``).
    require_secagg : bool (default: True)
        Refuse every training message (``train``, ``train.<action>``) without the protocol
        record.
    passthrough_records : sequence of str (default: ``("client-info",)``)
        ConfigRecords of the train reply forwarded unchanged (they must not hold the update).
    source : RandomSource, optional
        Randomness for keys and seeds; the OS CSPRNG unless a test injects a seeded one.
    """
    options = _StageOptions(weight_fn, tuple(passthrough_records))

    def secagg_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        message_type = msg.metadata.message_type
        if not _is_training(message_type):
            return call_next(msg, context)
        if RECORD_KEY not in msg.content.config_records:
            if require_secagg:
                raise SecAggError(
                    f"secagg_mod: refusing a plain {message_type!r} message (it would send the "
                    "update in clear); run the server with flower_suite.strategies.SecAggPlus"
                )
            return call_next(msg, context)
        if message_type != MessageType.TRAIN:
            raise SecAggError(
                f"secagg_mod: refusing a {message_type!r} message: secure aggregation runs "
                "over plain 'train' messages only"
            )
        data = dict(msg.content.config_records[RECORD_KEY])
        stage = data.get("stage")
        saved = context.state.config_records.get(STATE_KEY)
        client = (
            SecAggClient.from_dict(dict(saved), source=source)
            if saved is not None and stage != Stage.SETUP
            else SecAggClient(source=source)
        )
        content = RecordDict()
        reply: ProtocolMessage
        if stage == Stage.SETUP:
            reply = client.setup(SetupRequest.from_dict(data))
        elif stage == Stage.SHARE_KEYS:
            reply = client.share_keys(ShareKeysRequest.from_dict(data))
        elif stage == Stage.MASKED_INPUT:
            reply = _masked_input(client, msg, context, call_next, data, content, options)
        elif stage == Stage.UNMASK:
            reply = client.unmask(UnmaskRequest.from_dict(data))
        else:
            raise SecAggError(f"secagg_mod: unknown stage {stage!r}")
        # ConfigRecord wants dict[str, ConfigRecordValues]; dict is invariant, so rebuild
        state: dict[str, ConfigRecordValues] = {**client.to_dict()}
        context.state.config_records[STATE_KEY] = ConfigRecord(state)
        content[RECORD_KEY] = ConfigRecord(reply.to_dict())
        return Message(content=content, reply_to=msg)

    return secagg_mod


secagg_mod: Mod = make_secagg_mod()
