"""Server-side state of one FedMA pass: instructions, reply checks, matching, reconstruction.

Used by :class:`flower_suite.strategies.FedMA`; kept apart so the strategy module stays a thin
Flower adapter (spec ``shared/spec/fedma.md`` §9). Clients are identified by node id for
routing, and ordered by the partition id their replies report (``client-info``), so the
matching input order, hence the whole run, does not depend on simulation node ids or on the
order in which replies arrive (§9, §13).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from logging import WARNING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from numpy.typing import NDArray

from flower_suite.flower_compat import sample_nodes
from flower_suite.matching.layerwise import (
    average_last_layer,
    layer_tensor_names,
    match_client_layers,
    popular_assignment,
)
from flower_suite.matching.permutation import LayerSpec, num_units, reconstruct_local
from flower_suite.strategies.decoding import ReplyError, read_array, screen_messages
from flower_suite.wire.keys import ASSIGNMENT_KEY, CLIENT_INFO_KEY, FEDMA_INFO_KEY, FEDMA_TRAIN

__all__ = [
    "FedMAConfig",
    "FedMAPass",
    "array_record_bytes",
    "check_initial_arrays",
    "sample",
]

IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class FedMAConfig:
    """FedMA's hyper-parameters (documented on :class:`~flower_suite.strategies.FedMA`)."""

    gamma0: float = 7.0
    sigma0_sq: float = 1.0
    sigma_sq: float = 1.0
    iterations: int = 5
    max_width_ratio: float | None = None
    max_units: int = 700
    popularity_weight: float = 1.0
    aggregation: str = "mean"
    retrain_epochs: int | None = None
    last_layer_lr_scale: float = 1.0
    last_layer_epochs_scale: int = 1
    shared_init: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.gamma0 > 0 or not self.sigma0_sq > 0 or not self.sigma_sq > 0:
            raise ValueError("gamma0, sigma0_sq and sigma_sq must be positive")
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, not {self.iterations}")
        if self.max_width_ratio is not None and self.max_width_ratio < 1.0:
            raise ValueError(f"max_width_ratio must be >= 1, not {self.max_width_ratio}")
        if self.max_units < 1:
            raise ValueError(f"max_units must be >= 1, not {self.max_units}")
        if self.aggregation not in ("mean", "posterior"):
            raise ValueError(f"aggregation must be 'mean' or 'posterior', not {self.aggregation!r}")
        if self.retrain_epochs is not None and self.retrain_epochs < 1:
            raise ValueError(f"retrain_epochs must be >= 1, not {self.retrain_epochs}")
        if not self.last_layer_lr_scale > 0 or self.last_layer_epochs_scale < 1:
            raise ValueError("last_layer_lr_scale must be > 0 and last_layer_epochs_scale >= 1")

    def max_width(self, widest: int) -> int:
        """Width cap of a layer whose widest client has ``widest`` units (spec §8)."""
        if self.max_width_ratio is None:
            return max(min(self.max_units, 2 * widest), widest)
        return max(min(self.max_units, math.ceil(self.max_width_ratio * widest)), widest)


def array_record_bytes(content: RecordDict) -> int:
    """Bytes of every ArrayRecord in ``content`` (what the runner's MeteredGrid counts)."""
    return sum(record.count_bytes() for record in content.array_records.values())


def check_initial_arrays(
    arrays: ArrayRecord, template_shapes: Mapping[str, tuple[int, ...]]
) -> None:
    """The initial model must have the template's tensors (any widths)."""
    if sorted(arrays) != sorted(template_shapes):
        missing = sorted(set(template_shapes) - set(arrays))
        unexpected = sorted(set(arrays) - set(template_shapes))
        raise ValueError(
            f"initial_arrays do not fit model_fn(): missing {missing[:4]}, "
            f"unexpected {unexpected[:4]}"
        )


def sample(grid: Grid, fraction: float, min_nodes: int, min_available: int) -> list[int]:
    """Sample nodes like Flower's FedAvg: ``max(int(n * fraction), min_nodes)`` of them."""
    num = int(len(list(grid.get_node_ids())) * fraction)
    nodes, _ = sample_nodes(grid, min_available, max(num, min_nodes))
    return list(nodes)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint32)[0])


class FedMAPass:
    """Server state across the ``N`` steps of a pass and between passes.

    Between passes it keeps each client's assignments (to reconstruct its model, spec §6)
    and each global unit's popularity (for clients new to the next pass).
    """

    def __init__(
        self,
        layers: Sequence[LayerSpec],
        template_shapes: Mapping[str, tuple[int, ...]],
        config: FedMAConfig,
        *,
        dtype: np.dtype | type = np.float32,
    ) -> None:
        self.layers = list(layers)
        self.template_shapes = dict(template_shapes)
        shells = {k: np.broadcast_to(np.float32(0), s) for k, s in template_shapes.items()}
        self.template_units = [num_units(shells, spec) for spec in self.layers[:-1]]
        self.config = config
        self.dtype = np.dtype(dtype)  # the model's dtype: what clients install bitwise
        self.partitions: dict[int, int] = {}
        self.assignments: dict[int, list[IntArray]] = {}  # of the last complete pass
        self.counts: list[IntArray] = []  # popularity of global units, last complete pass
        self.fedma_round = 0
        self.nodes: list[int] = []
        self.abandoned = False
        self._reset_pass(ArrayRecord())

    def _reset_pass(self, start: ArrayRecord) -> None:
        self.start = start
        self.tensors: dict[str, np.ndarray] = {}
        self.pass_assign: dict[int, list[IntArray]] = {node: [] for node in self.nodes}
        self.pass_counts: list[IntArray] = []
        self.widths: list[int] = []
        self.seconds: list[float] = []
        self.uploads: dict[int, dict[str, np.ndarray]] = {}
        self.class_counts: dict[int, np.ndarray] = {}

    def begin(self, fedma_round: int, nodes: Sequence[int], arrays: ArrayRecord) -> None:
        """Start a pass with ``nodes``; ``arrays`` is the current global model."""
        self.fedma_round = fedma_round
        self.nodes = self._ordered(nodes)
        self.abandoned = False
        self._reset_pass(arrays)

    def abandon(self) -> None:
        """Too few clients: stop this pass, keep the previous global model and assignments."""
        self.abandoned = True
        self.nodes = []

    def _ordered(self, nodes: Sequence[int]) -> list[int]:
        return sorted(nodes, key=lambda n: (self.partitions.get(n, math.inf), n))

    # ------------------------------------------------------------------ instructions
    def instructions(self, server_round: int, step: int, config: ConfigRecord) -> list[Message]:
        """One ``train.fedma`` message per client of the pass for ``step``."""
        if self.abandoned:
            return []
        c = self.config
        values = {
            **dict(config),
            "server-round": server_round,
            "fedma-round": self.fedma_round,
            "fedma-step": step,
            "fedma-num-steps": len(self.layers),
            "last-layer-lr-scale": c.last_layer_lr_scale,
            "last-layer-epochs-scale": c.last_layer_epochs_scale,
        }
        if c.retrain_epochs is not None:
            values["retrain-epochs"] = c.retrain_epochs
        messages = []
        for node in self.nodes:
            content = RecordDict({"config": ConfigRecord(values)})
            arrays = self._start_model(node) if step == 0 else self._global_layer(node, step - 1)
            if arrays is not None:
                content["arrays"] = arrays
            messages.append(Message(content=content, message_type=FEDMA_TRAIN, dst_node_id=node))
        return messages

    def _start_model(self, node: int) -> ArrayRecord | None:
        if not self.counts:  # no complete pass yet: the plain FedMA pass from local models
            return self.start if self.config.shared_init else None
        state = {name: self.start[name].numpy() for name in self.start}
        assign = self.assignments.get(node)
        if assign is None:
            assign = [
                popular_assignment(c, u)
                for c, u in zip(self.counts, self.template_units, strict=True)
            ]
        local = reconstruct_local(state, self.layers, assign)
        return ArrayRecord(
            {k: Array(np.ascontiguousarray(local[k], dtype=self.dtype)) for k in state}
        )

    def _global_layer(self, node: int, index: int) -> ArrayRecord:
        names = layer_tensor_names(self.layers[index])
        arrays = {n: Array(self.tensors[n].astype(self.dtype)) for n in names}
        arrays[ASSIGNMENT_KEY] = Array(self.pass_assign[node][index])
        return ArrayRecord(arrays)

    # ------------------------------------------------------------------ replies
    def accept(self, step: int, replies: Sequence[Message]) -> list[RecordDict]:
        """Check and store the clients' layer ``step``; return the contents in client order.

        Clients that failed or sent a malformed reply leave the pass (logged).
        """
        names = layer_tensor_names(self.layers[step])
        good: dict[int, RecordDict] = {}
        kept, rejected = screen_messages(replies)
        for node, msg in kept:
            try:
                uploads, counts = self._read_reply(node, msg.content, names)
            except ReplyError as err:
                rejected.append((node, str(err)))
                continue
            info = msg.content.config_records.get(CLIENT_INFO_KEY)
            if info is not None and "partition-id" in info:
                self.partitions[node] = int(info["partition-id"])  # type: ignore[arg-type]
            self.class_counts[node] = counts
            self.uploads[node] = uploads
            good[node] = msg.content
        for node, reason in rejected:
            log(WARNING, "FedMA: dropping node %d from the pass: %s", node, reason)
        self.nodes = self._ordered(list(good))
        for node in list(self.pass_assign):
            if node not in good:
                del self.pass_assign[node]
        return [good[node] for node in self.nodes]

    def _read_reply(
        self, node: int, content: RecordDict, names: list[str]
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The layer tensors and class counts of one reply, read strictly (ReplyError)."""
        if node not in self.nodes:
            raise ReplyError("not part of this pass")
        if "arrays" not in content.array_records or "metrics" not in content.metric_records:
            raise ReplyError("reply lacks 'arrays' or 'metrics'")
        record = content["arrays"]
        if sorted(record) != sorted(names):
            raise ReplyError(f"expected arrays {names}, got {sorted(record)}")
        n_classes = self.template_shapes[self.layers[-1].weight][0]
        info = content.config_records.get(FEDMA_INFO_KEY)
        raw_counts = None if info is None else info.get("class-counts")
        if not isinstance(raw_counts, list) or len(raw_counts) != n_classes:
            raise ReplyError(f"reply lacks '{FEDMA_INFO_KEY}' class counts for {n_classes} classes")
        counts = np.asarray(raw_counts, dtype=np.float64)
        if not np.isfinite(counts).all() or (counts < 0).any():
            raise ReplyError("class counts must be finite and >= 0")
        return {name: self._read_tensor(name, record.get(name)) for name in names}, counts

    def _read_tensor(self, name: str, array: object) -> np.ndarray:
        """A client's layer tensor: floating, finite, the template's rank and kernel size, not
        absurdly wide; its ``.npy`` bytes checked against its own metadata."""
        if not isinstance(array, Array):
            raise ReplyError(f"array {name!r} is not an Array")
        template = tuple(self.template_shapes[name])
        shape = tuple(array.shape)
        if len(shape) != len(template) or shape[2:] != template[2:]:
            raise ReplyError(f"array {name!r} has shape {shape}, template {template}")
        # A generous bound (LSTM gates stack 4 x units in dim 0) that stops absurd uploads.
        limit = 4 * max(template[0] if template else 1, self.config.max_units)
        if shape and shape[0] > limit:
            raise ReplyError(f"array {name!r} has {shape[0]} rows, more than {limit}")
        try:
            dtype = np.dtype(array.dtype)
        except (TypeError, ValueError):
            raise ReplyError(f"array {name!r} has unknown dtype {array.dtype!r}") from None
        if not np.issubdtype(dtype, np.floating):
            raise ReplyError(f"array {name!r} has dtype {dtype}, expected floating point")
        values = read_array(array, shape=shape, dtype=dtype)
        if not np.isfinite(values).all():
            raise ReplyError(f"array {name!r} contains NaN or Inf")
        return np.array(values)

    # ------------------------------------------------------------------ aggregation
    def match(self, step: int) -> None:
        """Match hidden layer ``step`` of the clients' uploads (spec §5, step 2)."""
        spec = self.layers[step]
        uploads = [self.uploads[node] for node in self.nodes]
        widest = max(num_units(u, spec) for u in uploads)
        result = match_client_layers(
            uploads,
            spec,
            gamma0=self.config.gamma0,
            sigma0_sq=self.config.sigma0_sq,
            sigma_sq=self.config.sigma_sq,
            iterations=self.config.iterations,
            seed=_seed(self.config.seed, self.fedma_round, step),
            max_width=self.config.max_width(widest),
            popularity_weight=self.config.popularity_weight,
            aggregation=self.config.aggregation,
        )
        self.tensors.update(result.tensors)
        for node, assign in zip(self.nodes, result.assignments, strict=True):
            self.pass_assign[node].append(assign)
        self.pass_counts.append(result.counts)
        self.widths.append(result.width)
        self.seconds.append(result.seconds)

    def finish(self) -> ArrayRecord:
        """Average the output layer by class counts; the pass's global model."""
        spec = self.layers[-1]
        uploads = [self.uploads[node] for node in self.nodes]
        counts = np.stack([self.class_counts[node] for node in self.nodes])
        self.tensors.update(average_last_layer(uploads, spec, counts))
        self.assignments = {node: list(self.pass_assign[node]) for node in self.nodes}
        self.counts = list(self.pass_counts)
        return ArrayRecord(
            {k: Array(self.tensors[k].astype(self.dtype)) for k in self.template_shapes}
        )
