"""Flower client side: the torch ClientApp (and, in later issues, client mods)."""

from flower_suite.clients.client_app import (
    ClientData,
    client_seed,
    load_arrays,
    make_client_app,
    train_config_from,
)
from flower_suite.clients.compression_mod import make_compression_mod
from flower_suite.clients.secagg_mod import make_secagg_mod, secagg_mod

__all__ = [
    "ClientData",
    "client_seed",
    "load_arrays",
    "make_client_app",
    "make_compression_mod",
    "make_secagg_mod",
    "secagg_mod",
    "train_config_from",
]
