"""Flower client side: the torch ClientApp (and, in later issues, client mods)."""

from flower_suite.clients.client_app import (
    ClientData,
    client_seed,
    load_arrays,
    make_client_app,
    train_config_from,
)

__all__ = ["ClientData", "client_seed", "load_arrays", "make_client_app", "train_config_from"]
