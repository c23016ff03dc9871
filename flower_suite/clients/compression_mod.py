"""Client mod for update compression (ATOMO, QSGD, TernGrad, ...; dissertation ch. 3).

On a ``train`` message the mod lets the inner app train, then replaces the reply's model by the
compressed *update*: ``trained - received`` for every floating-point tensor (in the tensor's
dtype), the trained value itself for integer buffers (BatchNorm's ``num_batches_tracked``),
each encoded by a :class:`~flower_suite.compression.Compressor` of
:mod:`flower_suite.compression`. Every other message passes through unchanged, as do error
replies and ``train.<action>`` messages (FedMA's layer steps).

Reply layout (the train reply stays one ArrayRecord, one MetricRecord, its ConfigRecords)::

    "compressed-update": ArrayRecord  # one Array per model tensor, same names as "arrays":
                                      #   dtype "uint8", shape (len,), stype PAYLOAD_STYPE,
                                      #   data = that tensor's codec message (no .npy header)
    "metrics": MetricRecord           # the app's metrics + "compressed-bytes" (codec bytes)
    ...                               # every other record of the app's reply, unchanged

The ``"arrays"`` record is removed, so a server without the decoding wrapper
(:class:`flower_suite.strategies.compressed.Compressed`) excludes these replies instead of
averaging bytes. Draws are seeded per ``(seed, server round, partition)`` (the partition id,
else the node id), so runs repeat bitwise. With ``error_feedback`` the part of the update the
message did not carry (``corrected - decoded``) is kept per node in ``Context.state`` and added
to the next round's update (float tensors only; reset when the model's layout changes); the
message is of ``corrected / (1 + ω)`` so the recursion is contractive (EF14 with a scaled
unbiased compressor, see :mod:`flower_suite.compression.error_feedback`).

The record keys below are shared with the server wrapper; they belong in
:mod:`flower_suite.wire.keys` (both sides would then import them from there).
"""

from __future__ import annotations

from collections.abc import Mapping
from logging import WARNING

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Context, Message, MessageType, MetricRecord
from flwr.common import log

from flower_suite.compression import Compressor, error_feedback_step, layouts_of
from flower_suite.flower_compat import ClientAppCallable, Mod
from flower_suite.wire.config import read_int
from flower_suite.wire.keys import BYTES_METRIC, COMPRESSED_KEY, PAYLOAD_STYPE, RESIDUAL_STATE_KEY

__all__ = [
    "BYTES_METRIC",
    "COMPRESSED_KEY",
    "PAYLOAD_STYPE",
    "RESIDUAL_STATE_KEY",
    "compression_seed",
    "make_compression_mod",
    "payload_record",
    "update_tensors",
]

# --- keys shared with strategies/compressed.py (to move to wire/keys.py) -----------------------

_SEED_TAG = 0xA7030  # separates the codec's stream from the batch seed of the same round


def compression_seed(seed: int, server_round: int, partition: int) -> int:
    """The codec's seed for one client and round; equal inputs give equal seeds anywhere."""
    sequence = np.random.SeedSequence([_SEED_TAG, seed, server_round, partition])
    return int(sequence.generate_state(1, dtype=np.uint64)[0] >> 1)


def _tensor(array: Array) -> torch.Tensor:
    return torch.from_numpy(np.array(array.numpy(), copy=True))


def update_tensors(received: ArrayRecord, trained: ArrayRecord) -> dict[str, torch.Tensor]:
    """``trained - received`` per floating-point tensor (in its dtype), ``trained`` itself per
    integer tensor. Raises ``ValueError`` if names, shapes or dtypes differ."""
    if set(received.keys()) != set(trained.keys()):
        missing = sorted(set(received.keys()) - set(trained.keys()))
        extra = sorted(set(trained.keys()) - set(received.keys()))
        raise ValueError(
            f"trained arrays differ from the received: missing {missing}, extra {extra}"
        )
    update = {}
    for name in received:
        before, after = _tensor(received[name]), _tensor(trained[name])
        if before.shape != after.shape or before.dtype != after.dtype:
            raise ValueError(
                f"array {name!r}: trained {tuple(after.shape)} {after.dtype}, "
                f"received {tuple(before.shape)} {before.dtype}"
            )
        update[name] = after - before if before.is_floating_point() else after
    return update


def payload_record(payload: Mapping[str, bytes]) -> ArrayRecord:
    """One raw uint8 Array per codec message (no .npy framing: its length is its size)."""
    return ArrayRecord(
        {
            name: Array(dtype="uint8", shape=(len(data),), stype=PAYLOAD_STYPE, data=bytes(data))
            for name, data in payload.items()
        }
    )


def _server_round(msg: Message) -> int:
    config = msg.content.config_records.get("config")
    return read_int(config, "server-round", 0) if config is not None else 0


def _partition(context: Context) -> int:
    return int(context.node_config.get("partition-id", context.node_id))


def _residual(context: Context, update: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The stored residual if it fits this update's float tensors, else zeros."""
    floats = {k: v for k, v in update.items() if v.is_floating_point()}
    stored = context.state.array_records.get(RESIDUAL_STATE_KEY)
    if stored is not None:
        residual = {k: _tensor(a) for k, a in stored.items()}
        if layouts_of(residual) == layouts_of(floats):
            return residual
        log(WARNING, "compression_mod: model layout changed; error-feedback residual reset")
    return {k: torch.zeros_like(v) for k, v in floats.items()}


def _compress_with_feedback(
    compressor: Compressor,
    update: dict[str, torch.Tensor],
    generator: torch.Generator,
    context: Context,
) -> dict[str, bytes]:
    """Scaled error feedback (:func:`~flower_suite.compression.error_feedback_step`): send
    ``C((update + residual)/(1 + ω))``, keep ``corrected - decoded`` as the next residual."""
    payload, residual = error_feedback_step(
        compressor, update, _residual(context, update), generator
    )
    context.state.array_records[RESIDUAL_STATE_KEY] = ArrayRecord(
        {k: Array(v.numpy()) for k, v in residual.items()}
    )
    return payload


def make_compression_mod(
    compressor: Compressor,
    seed: int = 0,
    *,
    error_feedback: bool = False,
    arrayrecord_key: str = "arrays",
) -> Mod:
    """A client mod sending each train reply's update through ``compressor``.

    Parameters
    ----------
    compressor : Compressor
        E.g. ``COMPRESSORS.create("atomo_spectral", budget=2)``; the server's
        :class:`~flower_suite.strategies.compressed.Compressed` must use the same kind.
    seed : int (default: 0)
        Base of the per-(round, partition) codec seed (:func:`compression_seed`).
    error_feedback : bool (default: False)
        Add the previous rounds' untransmitted remainder to each update (per node, kept in
        ``Context.state``) and send ``C(corrected / (1 + ω))``, ``ω`` the compressor's relative
        variance on each tensor: the scaling makes the recursion contractive, so the residual
        stays bounded for any unbiased compressor (without it, one with ``ω > 1`` diverges).
    arrayrecord_key : str (default: "arrays")
        The ArrayRecord holding the model in the instruction and in the app's reply.
    """
    if not isinstance(compressor, Compressor):
        raise TypeError(f"compressor must be a Compressor, not {type(compressor).__name__}")

    def compression_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(msg, context)
        if msg.metadata.message_type != MessageType.TRAIN or reply.has_error():
            return reply
        received = msg.content.array_records.get(arrayrecord_key)
        trained = reply.content.array_records.get(arrayrecord_key)
        if received is None or trained is None:
            raise ValueError(f"compression_mod: no ArrayRecord {arrayrecord_key!r} to compress")
        update = update_tensors(received, trained)
        generator = torch.Generator().manual_seed(
            compression_seed(seed, _server_round(msg), _partition(context))
        )
        if error_feedback:
            payload = _compress_with_feedback(compressor, update, generator, context)
        else:
            payload = compressor.compress(update, generator)
        del reply.content[arrayrecord_key]
        reply.content[COMPRESSED_KEY] = payload_record(payload)
        metrics = reply.content.metric_records
        record = metrics.get("metrics") or next(iter(metrics.values()), None)
        if record is None:
            record = reply.content["metrics"] = MetricRecord()
        record[BYTES_METRIC] = compressor.payload_bytes(payload)
        return reply

    return compression_mod
