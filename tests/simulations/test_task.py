"""ExperimentTask: client data, model construction, preloading for Ray actors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from flower_suite.simulations import load_config
from flower_suite.simulations.engine.runner import prepare
from flower_suite.simulations.engine.task import ExperimentTask


def test_client_data_is_the_partition_plus_a_test_shard() -> None:
    """Partitions are disjoint and cover train; test shards are disjoint and cover test."""
    task = ExperimentTask(load_config("digits_fedavg", ["num_clients=4"]))
    train, test = task.data()
    clients = [task.client_data(i) for i in range(4)]
    assert sum(len(c.train) for c in clients) == len(train)
    assert sum(len(c.test) for c in clients) == len(test)
    for i, c in enumerate(clients):
        np.testing.assert_array_equal(c.train.y, train.y[task.partitions()[i]])
    with pytest.raises(ValueError, match="outside"):
        task.client_data(4)


def test_initial_model_is_seeded_and_does_not_touch_global_rng() -> None:
    """Same seed -> same weights; building it leaves torch's global RNG where it was."""
    task = ExperimentTask(load_config("digits_fedavg"))
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = task.build_model(seed=5).state_dict()
    after = torch.rand(1)
    b = task.build_model(seed=5).state_dict()
    c = task.build_model(seed=6).state_dict()
    assert torch.equal(before, after)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_model_kwargs_inferred_from_data() -> None:
    """num_classes and in_channels come from the data unless the config sets them."""
    task = ExperimentTask(load_config("digits_fedavg"))
    assert task.model_kwargs() == {"num_classes": 10, "in_channels": 1}
    task = ExperimentTask(load_config("digits_fedavg", ["model.num_classes=12"]))
    assert task.model_kwargs()["num_classes"] == 12
    with pytest.raises(ValueError, match="classes"):
        task.check_model_fits_data()


def test_prepared_task_ships_partitions_and_small_data() -> None:
    """prepare() precomputes what actors need; the pickle is equal in content."""
    config = load_config("digits_fedavg", ["num_clients=5"])
    shipped = prepare(config)
    assert shipped.split is not None and shipped.parts is not None
    clone = pickle.loads(pickle.dumps(shipped))
    reference = ExperimentTask(config)
    for i in range(5):
        np.testing.assert_array_equal(
            clone.client_data(i).train.x, reference.client_data(i).train.x
        )
    big = ExperimentTask(config).preloaded(ship_limit_bytes=1)
    assert big.split is None and big.parts is not None


def test_fewer_partitions_than_clients_share_data() -> None:
    """num_partitions = 5 over 10 clients: client i and i + 5 train on the same data."""
    task = ExperimentTask(load_config("digits_fedavg", ["partition.num_partitions=5"]))
    assert len(task.partitions()) == 5
    np.testing.assert_array_equal(task.client_data(2).train.x, task.client_data(7).train.x)
    assert not np.array_equal(task.client_data(2).train.y, task.client_data(3).train.y)
    from flower_suite.simulations.config import ConfigError

    with pytest.raises(ConfigError, match=r"^partition\.num_partitions"):
        load_config("digits_fedavg", ["partition.num_partitions=11"])
