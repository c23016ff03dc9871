"""Colluding Byzantine clients that never see an honest update (ALIE from the colluders' own).

The omniscient ALIE and IPM read every honest update of the round, which only a simulation's
server-side injector can do; under secure aggregation no party sees an honest update at all.
ALIE's own threat model (Baruch et al., NeurIPS 2019, section 3) is weaker: the corrupted
workers estimate the coordinate-wise mean and standard deviation from *their own* data and
all send ``mu - z sigma``. That is ``BYZANTINE_ATTACKS["alie"]`` with ``source = "own"``, which
needs the colluders' true updates as rows.

:func:`make_colluding_train_fn` gives each active attacker those rows without a side channel:
from the global model it received, it trains the update of every colluding partition with that
partition's data and batch seed (``client_seed(seed, round, partition)``, as the ClientApp
does). Training is deterministic, so the rows are exactly what each colluder computes for
itself, as if they had exchanged their updates; every colluder then sends the same malicious
update. Works wherever the ClientApp can load any partition (simulations), with or without
secure aggregation (the update is masked after it is made).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from flwr.app import Context
from torch import nn

from flower_suite.attacks.byzantine import UpdateAttack
from flower_suite.attacks.schedule import AttackSchedule, as_schedule
from flower_suite.clients.attacker import current_round, flag_active, is_active
from flower_suite.clients.client_app import (
    DataFn,
    TrainFn,
    client_seed,
    default_train,
    partition_id_of,
    with_partition,
)
from flower_suite.data.dataset import ArrayDataset
from flower_suite.training import TrainConfig, TrainResult

# Separates the colluders' shared random stream from the clients' batch seeds.
_COLLUSION_STREAM = 0xC011


def float_state(model: nn.Module) -> torch.Tensor:
    """The model's floating-point state (parameters and float buffers) as one float64 vector,
    in ``state_dict`` order (integer buffers such as BatchNorm's counter are left out)."""
    state = model.state_dict().values()
    parts = [
        t.detach().reshape(-1).to("cpu", torch.float64) for t in state if t.is_floating_point()
    ]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def load_float_state(model: nn.Module, vector: torch.Tensor) -> None:
    """Write ``vector`` (as made by :func:`float_state`) back into ``model``'s float state."""
    state, offset = model.state_dict(), 0
    expected = sum(t.numel() for t in state.values() if t.is_floating_point())
    if vector.numel() != expected:
        raise ValueError(f"vector has {vector.numel()} entries, the model's float state {expected}")
    for key, tensor in state.items():
        if not tensor.is_floating_point():
            continue
        size = tensor.numel()
        chunk = vector[offset : offset + size].reshape(tensor.shape)
        state[key] = chunk.to(device=tensor.device, dtype=tensor.dtype)
        offset += size
    model.load_state_dict(state)


def make_colluding_train_fn(
    attack: UpdateAttack,
    schedule: AttackSchedule | Sequence[int],
    colluders: Sequence[int],
    data_fn: DataFn,
    *,
    seed: int,
    base: TrainFn = default_train,
) -> TrainFn:
    """A ``TrainFn`` whose active attackers send ``attack(rows)``, ``rows`` being the true
    updates of the ``colluders`` partitions (see the module docstring).

    ``seed`` is the experiment's seed (the ClientApp's ``base_seed``); ``data_fn`` loads a
    partition's data. Needs :func:`~flower_suite.clients.attacker.attack_context_mod` for the
    round. Honest training outside active rounds.
    """
    sched = as_schedule(schedule)
    members = sorted({int(p) for p in colluders})
    if not members:
        raise ValueError("a colluding attack needs at least one colluder partition")

    def train_fn(
        model: nn.Module,
        data: ArrayDataset,
        config: TrainConfig,
        *,
        seed: int,
        device: torch.device,
        context: Context,
    ) -> TrainResult:
        if not is_active(sched, context):
            return base(model, data, config, seed=seed, device=device, context=context)
        server_round = current_round(context) or 0
        start = copy.deepcopy(model)
        own = partition_id_of(context)
        result = base(model, data, config, seed=seed, device=device, context=context)
        origin = float_state(start)
        rows = []
        for partition in members:
            if partition == own:
                rows.append(float_state(model) - origin)
                continue
            peer = copy.deepcopy(start)
            peer_context = with_partition(context, partition)
            peer_data = data_fn(peer_context).train
            peer_seed = client_seed(base_seed, server_round, partition)
            base(peer, peer_data, config, seed=peer_seed, device=device, context=peer_context)
            rows.append(float_state(peer) - origin)
        # one stream shared by every colluder (a random attack then sends equal rows too)
        shared = client_seed(base_seed + _COLLUSION_STREAM, server_round, members[0])
        generator = torch.Generator().manual_seed(shared)
        malicious = attack(torch.stack(rows), None, generator)[0]
        load_float_state(model, origin + malicious.to(torch.float64))
        flag_active(context, f"{attack.name}-colluding")
        return result

    base_seed = seed
    return train_fn
