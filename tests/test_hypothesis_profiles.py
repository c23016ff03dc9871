"""The hypothesis profiles of ``tests/conftest.py``: CI is derandomized unless asked otherwise."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, is_hypothesis_test, settings
from hypothesis import strategies as st

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")


@settings(max_examples=3)
@given(st.integers())
def test_a_property_test(value: int) -> None:
    assert isinstance(value, int)


@pytest.mark.skipif(PROFILE != "ci", reason="checks the default (ci) profile")
def test_the_default_profile_is_derandomized_with_no_database() -> None:
    # A test's own @settings(...) inherits every key it does not set from the profile.
    for current in (settings.default, settings(max_examples=7, deadline=None)):
        assert current.derandomize is True
        assert current.database is None
        assert current.print_blob is True


def test_every_hypothesis_test_is_marked_fuzz(request: pytest.FixtureRequest) -> None:
    items = [i for i in request.session.items if is_hypothesis_test(getattr(i, "obj", None))]
    assert any(i.name == "test_a_property_test" for i in items)
    assert all(i.get_closest_marker("fuzz") is not None for i in items)
