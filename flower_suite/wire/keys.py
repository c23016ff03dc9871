"""The record keys and message types both sides of a protocol agree on (framework-free).

A server module and a client module that exchange a record name it from here, so neither
imports the other: strategies, Grid wrappers and hooks on one side, ClientApps and mods on the
other. Only string constants live here.
"""

from __future__ import annotations

__all__ = [
    "ARRAYS_KEY",
    "ASSIGNMENT_KEY",
    "ATTACK_INFO_KEY",
    "CLIENT_INFO_KEY",
    "FEDMA_ACTION",
    "FEDMA_EVALUATE",
    "FEDMA_INFO_KEY",
    "FEDMA_TRAIN",
    "METRICS_IN_CLEAR",
    "N_S_ESTIMATE_KEY",
    "RECORD_KEY",
    "WEIGHT_KEY",
]

# --- Every reply ------------------------------------------------------------------------------

# ConfigRecord with the node's `partition-id` (not in the metrics, which strategies average):
# the simulation runner orders nodes and replies by it.
CLIENT_INFO_KEY = "client-info"

# --- Attacks (clients/attacker.py, byzantine_injector.py <-> simulations) ---------------------

# ConfigRecord `{"attacker": True, "attack": name, "server-round": t}` on the replies of acting
# attackers: for measurement only (selection rates); a strategy or defense must never read it.
ATTACK_INFO_KEY = "attack-info"
# Optional train-config key: the server's estimate of n_S for model replacement (spec pitfall
# 7); overrides PGDTrain.total_examples when present.
N_S_ESTIMATE_KEY = "n-s-estimate"

# --- FedMA (clients/fedma_client.py <-> strategies/fedma*.py) ---------------------------------

FEDMA_ACTION = "fedma"
FEDMA_TRAIN = f"train.{FEDMA_ACTION}"
FEDMA_EVALUATE = f"evaluate.{FEDMA_ACTION}"
# In a step-n instruction the ArrayRecord holds the global layer n-1 plus this int64 array.
ASSIGNMENT_KEY = "fedma.assignment"
# ConfigRecord of a FedMA reply: the client's class counts and the step it answers.
FEDMA_INFO_KEY = "fedma-info"

# --- Secure aggregation (clients/secagg_mod.py <-> strategies/secagg*.py) ---------------------

RECORD_KEY = "secagg"  # ConfigRecord carrying the protocol message
# Extra keys the server adds to the stage-3 record (beside the protocol message).
ARRAYS_KEY = "arrays-key"
WEIGHT_KEY = "weight-key"
METRICS_IN_CLEAR = "metrics-in-clear"

# --- Update compression (clients/compression_mod.py <-> strategies/compressed.py) ------------

COMPRESSED_KEY = "compressed-update"  # ArrayRecord of the reply: one codec message per tensor
PAYLOAD_STYPE = "flower_suite.compression"  # Array.stype of one codec message (raw bytes)
BYTES_METRIC = "compressed-bytes"  # reply metric: codec bytes of the payload (client's claim)
RESIDUAL_STATE_KEY = "compression-residual"  # Context.state ArrayRecord (error feedback)

# --- DRACO (clients/draco_client.py <-> strategies/draco.py) -----------------------------------

DRACO_ACTION = "draco"
DRACO_TRAIN = f"train.{DRACO_ACTION}"
DRACO_MESSAGE_KEY = "draco-message"  # ArrayRecord of the reply: "real" (and "imag") float64
# ConfigRecord keys of a `train.draco` instruction (beside the client hyper-parameters).
DRACO_INDEX = "draco-index"  # the node's stable index j
DRACO_SHARDS = "draco-shards"  # the partitions S_j it holds (list of int, ascending)
DRACO_COEF_REAL = "draco-coef-real"  # Re W[k, j] for k in S_j (1.0 for the repetition code)
DRACO_COEF_IMAG = "draco-coef-imag"  # Im W[k, j] (0.0 for the repetition code)
DRACO_COMPLEX = "draco-complex"  # the message is complex (cyclic code): send "imag" too
DRACO_MODE = "draco-mode"  # "update" (local training per shard) or "gradient" (one step)
DRACO_FLOAT64 = "draco-float64"  # compute in float64 (deterministic replicas)
