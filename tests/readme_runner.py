"""Run ``tests/test_readme.py``'s jobs, each in a process of its own, after one import.

Usage: ``python tests/readme_runner.py < request.json``; the request is ``{"jobs": [...],
"warm_digits_edge_seeds": [0], "parallel": 2}``, each job ``{"id": ..., "cwd": ...,
"env": {NAME: value or null}}`` plus either ``"argv"`` (a ``flower-suite`` command line
without the program name) or ``"code"`` (Python source, with ``"filename"`` for tracebacks).
The last line of stdout is a JSON list of ``{"id", "returncode", "output", "seconds"}``.

Why not one fresh interpreter per job: on a loaded 2-core machine each one spends 5-10 s
importing torch, flwr and scikit-learn before it reads its arguments, and each ``digits_edge``
experiment spends 10-25 s more retraining the model that picks the edge-case images. Here the
parent imports the console script's module (``flower_suite.simulations.cli``: what the
``flower-suite`` entry point imports, and nothing else) once, then **forks one child per job**
with its own working directory, environment, stdout/stderr and exit status:

- an ``argv`` job calls the entry point ``main(argv)`` and exits with its return code
  (argparse's ``SystemExit`` included), exactly what ``flower-suite ARGV`` does;
- a ``code`` job executes the source as ``__main__`` and exits 0, or 1 with the traceback.

Every child starts from the state a fresh process has after those imports: what one job
registers or caches is gone for the next. Two things are done once in the parent to save
time, neither of which a command could observe:

- ``flwr_datasets`` (third-party: Flower's partitioners, with Hugging Face ``datasets``,
  pyarrow and matplotlib under it) is imported up front; every command that partitions data
  imports it lazily, 1-5 s each on a loaded machine;
- for each seed in ``warm_digits_edge_seeds`` the cache of :func:`flower_suite.attacks.
  digits_edge.digits_edge` (deterministic in the seed) is filled, so children reuse the
  edge-case task instead of retraining it.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from typing import Any


def _redirect(out_path: str) -> None:
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 (the child exits with os._exit)
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115


def _child(job: dict[str, Any], out_path: str) -> None:
    """In the forked child: run the job with its output in ``out_path``, then exit."""
    code = 1
    try:
        _redirect(out_path)
        os.chdir(job["cwd"])
        for name, value in job.get("env", {}).items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if "argv" in job:
            from flower_suite.simulations.cli import main

            code = main(job["argv"])
        else:
            namespace = {"__name__": "__main__"}
            exec(compile(job["code"], job.get("filename", "<job>"), "exec"), namespace)
            code = 0
    except SystemExit as exit_:  # argparse errors, sys.exit in a snippet
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_jobs(
    jobs: list[dict[str, Any]], warm_digits_edge_seeds: list[int], parallel: int = 1
) -> list[dict[str, Any]]:
    import flwr_datasets  # noqa: F401 (imported lazily by partitioning: see the docstring)

    import flower_suite.simulations.cli  # noqa: F401 (the console script's imports, once)

    if warm_digits_edge_seeds:
        from flower_suite.attacks.digits_edge import digits_edge

        for seed in warm_digits_edge_seeds:
            digits_edge(seed)
    results: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        running: dict[int, tuple[int, str, float]] = {}  # pid -> (job, output file, start)

        def reap() -> None:
            pid, status = os.wait()
            number, out_path, started = running.pop(pid)
            with open(out_path, errors="replace") as fh:
                output = fh.read()
            results[number] = {
                "id": jobs[number]["id"],
                "returncode": os.waitstatus_to_exitcode(status),
                "output": output,
                "seconds": round(time.monotonic() - started, 2),
            }

        for number, job in enumerate(jobs):
            while len(running) >= max(1, parallel):
                reap()
            out_path = os.path.join(scratch, f"{number}.out")
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(job, out_path)
            running[pid] = (number, out_path, time.monotonic())
        while running:
            reap()
    return [results[number] for number in range(len(jobs))]


if __name__ == "__main__":
    request = json.load(sys.stdin)
    results = run_jobs(
        request["jobs"], request.get("warm_digits_edge_seeds", []), request.get("parallel", 1)
    )
    print("\n" + json.dumps(results))
