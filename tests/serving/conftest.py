"""Shared fixture of the serving tests: Ray (the trained model is in ``serving_models.py``).

The ``ray_runtime`` fixture is module-scoped: each test module that needs Ray starts it once,
with its own short ``RAY_TMPDIR`` (Ray's Unix sockets reject pytest's long tmp paths), and
shuts it down at the module's end, so no Ray outlives the module.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest
import ray


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[None]:
    ray_tmp = tempfile.mkdtemp(prefix="fs-ray-", dir="/tmp")
    previous = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = ray_tmp
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        if previous is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = previous
        shutil.rmtree(ray_tmp, ignore_errors=True)
