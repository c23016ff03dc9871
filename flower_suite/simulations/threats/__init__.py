"""Attack runs: the ``[attack]`` section of a config made into ClientApp and Grid pieces.

- :mod:`~.plan`: :func:`plan_threat` decides once, in the driver, everything seeded
  (attacker partitions, honest edge holders, the edge-example split) into a picklable
  :class:`ThreatPlan` that travels with the task to the Ray actors.
- :mod:`~.client`: :func:`client_threat`, the attacker behaviour of the ClientApp (a
  ``TrainFn``, client mods, a ``data_fn`` wrapper for honest edge holders).
- :mod:`~.server`: :func:`server_threat` wraps the server's Grid in an :class:`AttackGrid`
  (forced fixed-frequency participation, update norms) over the omniscient injector (ALIE,
  IPM) when configured.

The hooks that measure an attack run (backdoor accuracy, selection, norms) are round hooks
of the engine (``engine/attack_hooks.py``). A run without ``[attack]`` never reaches this
package's code paths. Nothing here imports the engine.
"""

from flower_suite.simulations.threats.client import (
    ClientThreat,
    client_threat,
    train_config_extras,
)
from flower_suite.simulations.threats.plan import EdgeSets, ThreatPlan, load_edge_sets, plan_threat
from flower_suite.simulations.threats.server import (
    AttackGrid,
    RoundObservation,
    ServerThreat,
    server_threat,
)

__all__ = [
    "AttackGrid",
    "ClientThreat",
    "EdgeSets",
    "RoundObservation",
    "ServerThreat",
    "ThreatPlan",
    "client_threat",
    "load_edge_sets",
    "plan_threat",
    "server_threat",
    "train_config_extras",
]
