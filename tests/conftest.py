"""Shared fixtures (Flower message identity outside a run) and the hypothesis profiles.

Property-based tests run under one of two hypothesis profiles, chosen by the environment
variable ``HYPOTHESIS_PROFILE`` (loaded here, before any test module is imported, so every
``@settings(...)`` in the tests inherits from it):

- ``ci`` (the default; ``make test``): derandomized, so a run is a pure function of the code
  and CI never fails by chance; no example database, so a failure found on one machine is not
  silently replayed (or not) on another; every bug that random search ever found is replayed
  through an ``@example`` pin on its test.
- ``fuzz`` (``make fuzz``): the random search, with ``FUZZ_SCALE`` (env
  ``HYPOTHESIS_FUZZ_SCALE``, default 20) times each test's CI budget of examples (the
  ``max_examples`` written on a test, else 100). A failure prints the falsifying example and a
  ``@reproduce_failure`` blob; pin the example with ``@example`` on its test before fixing.

Every hypothesis test gets the ``fuzz`` marker automatically (``pytest -m fuzz`` selects them),
so a new property test cannot be forgotten by ``make fuzz``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, is_hypothesis_test, settings

from flower_suite.flower_compat import message_identity

# How many times its CI budget of examples each property test gets under the fuzz profile
# (the budget is the test's own max_examples, else hypothesis' default of 100).
FUZZ_SCALE = int(os.environ.get("HYPOTHESIS_FUZZ_SCALE", "20"))

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    print_blob=True,
    deadline=None,  # shared 2-core machines: timing is noise, not a property
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz",
    derandomize=False,
    database=None,
    print_blob=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)  # raises InvalidArgument naming the profile if unknown


def pytest_report_header() -> str:
    return f"hypothesis profile: {PROFILE} ({settings.default!r})"


@pytest.hookimpl(tryfirst=True)  # before `-m fuzz` deselects anything
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every hypothesis test ``fuzz``; under the fuzz profile, scale its budget."""
    for item in items:
        test = getattr(item, "obj", None)
        test = getattr(test, "__func__", test)  # a method's function carries the settings
        if test is None or not is_hypothesis_test(test):
            continue
        item.add_marker(pytest.mark.fuzz)
        if PROFILE == "fuzz":
            _scale_budget(item, test)


_SCALED: set[int] = set()  # ids of the test functions already scaled


def _scale_budget(item: pytest.Item, test: object) -> None:
    # A test's own @settings(max_examples=...) outranks any profile, and hypothesis has no
    # public hook to rescale it, so the settings the test will run with are replaced here.
    # Hypothesis reads this attribute when the test is called; if a release renames it, fail
    # loudly rather than fuzz with the CI budget. The parametrized items of one test share
    # its function: scale it once, not once per item (FUZZ_SCALE ** items).
    if id(test) in _SCALED:
        return
    _SCALED.add(id(test))
    current = getattr(test, "_hypothesis_internal_use_settings", None)
    if not isinstance(current, settings):
        raise pytest.UsageError(
            f"{item.nodeid}: cannot find its hypothesis settings to scale for the fuzz profile"
        )
    scaled = settings(current, max_examples=current.max_examples * FUZZ_SCALE)
    test._hypothesis_internal_use_settings = scaled  # type: ignore[attr-defined]


@pytest.fixture
def task_identity() -> Iterator[None]:
    """Creating Messages outside a run needs a run/node/task id (see ``message_identity``)."""
    with message_identity():
        yield


@pytest.fixture(autouse=True)
def private_ray_tmpdir(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test's Ray (if it starts one) gets its own short ``RAY_TMPDIR``: no session files
    shared between tests, and socket paths well under the 107-byte Unix limit (pytest's
    ``tmp_path`` is too long for them; Ray then waits for ever)."""
    path = tempfile.mkdtemp(dir="/tmp", prefix="rt")
    monkeypatch.setenv("RAY_TMPDIR", path)
    yield path
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return  # a Ray still running here (a module-scoped one) keeps its sockets in there
    shutil.rmtree(path, ignore_errors=True)
