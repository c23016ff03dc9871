"""Components a user registers in the driver script reach Flower's Ray workers.

Ray workers are fresh processes: a ``register_model`` / ``register_dataset`` call in the
user's script never ran there, so looking the name up in a worker used to fail with
``RegistryError: unknown model``. The runner resolves registered names in the driver and ships
the factories with the task; this test runs a real script as a user would (``python
script.py``, components defined in ``__main__``) on the Ray engine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from torch import nn

    from flower_suite.data import load_digits_split
    from flower_suite.data.dataset import ArrayDataset
    from flower_suite.data.registry import register_dataset
    from flower_suite.models import register_model
    from flower_suite.simulations import load_config, run_experiment
    from flower_suite.strategies import FedAvg, register_strategy


    class UserNet(nn.Module):  # defined in __main__: unknown to any other process
        def __init__(self, num_classes: int = 10, hidden: int = 24):
            super().__init__()
            self.body = nn.Sequential(
                nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
            )

        def forward(self, x):
            return self.body(x)


    def even_digits(path: str, test_fraction: float, seed: int):
        # the real digits, restricted to the even classes and relabelled 0..4
        def keep(split: ArrayDataset) -> ArrayDataset:
            mask = split.y % 2 == 0
            return ArrayDataset(split.x[mask], (split.y[mask] // 2).astype(np.int64), 5, "even")

        train, test = load_digits_split(seed=seed)
        return keep(train), keep(test)


    register_model("user_net", UserNet)
    register_dataset("even_digits", even_digits)
    register_strategy("user_fedavg", lambda **kw: FedAvg(**kw))

    config = load_config(
        "digits_fedavg",
        [
            "rounds=2", "num_clients=4", "clients_per_round=0",
            "data.dataset=even_digits", "model.name=user_net", "model.hidden=16",
            "strategy.name=user_fedavg",
        ],
    )
    result = run_experiment(config, record=False)
    json.dump({"acc": [row["test-acc"] for row in result.rows]}, sys.stdout)
    """
)


@pytest.mark.timeout(600)
def test_components_registered_in_the_driver_script_train_on_ray(tmp_path: Path) -> None:
    script = tmp_path / "user_script.py"
    script.write_text(SCRIPT)
    # Ray's own temp directory, short: its Unix socket paths must fit in 107 bytes, which a
    # path under pytest's tmp_path does not (Ray then waits for a GCS that never starts).
    ray_tmp = tempfile.mkdtemp(prefix="fs-ray-", dir="/tmp")
    try:
        proc = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env={**os.environ, "RAY_TMPDIR": ray_tmp},
            capture_output=True,
            text=True,
            timeout=540,  # ~30 s idle; generous for a loaded CI machine
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "RegistryError" not in proc.stderr
    accuracies = json.loads(proc.stdout.strip().splitlines()[-1])["acc"]
    assert len(accuracies) == 3  # the initial model (round 0), then two rounds
    # five even classes: chance is 0.2; two FedAvg rounds of the user's MLP learn something
    assert accuracies[-1] > 0.4, accuracies
