"""flower-suite: robust, secure and communication-efficient federated learning for Flower.

Layers (see ARCHITECTURE.md): framework-free cores (`data`, `models`, later `aggregation`,
`secagg`, `matching`) -> Flower adapters (`clients`, `strategies`) -> `simulations` (runner,
CLI).
"""

__version__ = "0.1.0"
