"""Helpers to build strategy inputs: a global model and client replies around it."""

from __future__ import annotations

from unittest.mock import Mock

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

SHAPES = {"w": (4, 3), "b": (3,)}


def global_arrays(seed: int = 0) -> ArrayRecord:
    rng = np.random.default_rng(seed)
    return ArrayRecord({k: Array(rng.normal(size=s).astype(np.float32)) for k, s in SHAPES.items()})


def reply(
    arrays: dict[str, np.ndarray], node_id: int, num_examples: int = 10, error: bool = False
) -> Mock:
    msg = Mock(spec=Message)
    msg.content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "metrics": MetricRecord({"num-examples": num_examples, "train-loss": 1.0}),
        }
    )
    msg.has_error.return_value = error
    msg.has_content.return_value = not error
    msg.metadata.src_node_id = node_id
    if error:
        msg.error.reason = "client crashed"
    return msg


def updates_around(
    base: ArrayRecord, deltas: list[np.ndarray], weights: list[int] | None = None
) -> list[Mock]:
    """Replies whose flat update (reply - base) is ``deltas[i]`` (flattened w then b)."""
    out = []
    for i, delta in enumerate(deltas):
        arrays, offset = {}, 0
        for key, shape in SHAPES.items():
            size = int(np.prod(shape))
            value = base[key].numpy() + delta[offset : offset + size].reshape(shape)
            arrays[key] = value.astype(np.float32)
            offset += size
        out.append(reply(arrays, node_id=100 + i, num_examples=(weights or [10] * 99)[i]))
    return out


def flat(record: ArrayRecord) -> np.ndarray:
    return np.concatenate([record[k].numpy().reshape(-1) for k in SHAPES])


def fake_grid(node_ids: list[int]) -> Mock:
    grid = Mock(spec=Grid)
    grid.get_node_ids.return_value = node_ids
    return grid


def configure(strategy, arrays: ArrayRecord, node_ids: list[int]) -> list[Message]:
    return list(strategy.configure_train(1, arrays, ConfigRecord({}), fake_grid(node_ids)))
