"""Tests for ``flower_suite.registry.Registry`` on fresh, test-local registries."""

from __future__ import annotations

from typing import Any

import pytest

from flower_suite.registry import Registry, RegistryError


class Widget:
    """A toy product with keyword parameters."""

    def __init__(self, size: int = 1, *, colour: str = "red") -> None:
        self.size = size
        self.colour = colour


def make_gadget(weight: float, /, name: str = "g") -> dict[str, Any]:
    """A factory function with a positional-only parameter."""
    return {"weight": weight, "name": name}


def make_anything(**kwargs: Any) -> dict[str, Any]:
    """A factory that accepts every keyword."""
    return dict(kwargs)


@pytest.fixture
def reg() -> Registry[Any]:
    """A registry with a class, a function and a ``**kwargs`` factory."""
    registry: Registry[Any] = Registry("widget")
    registry.register("widget", Widget)
    registry.register("multi-krum", make_gadget)
    registry.register("anything", make_anything)
    return registry


# ------------------------------------------------------------------- register / get / create


def test_register_and_get_return_the_factory(reg: Registry[Any]) -> None:
    """``get`` returns exactly the registered object."""
    assert reg.get("widget") is Widget
    assert reg.get("multi-krum") is make_gadget


def test_register_returns_the_factory() -> None:
    """Direct registration returns the factory unchanged."""
    registry: Registry[Any] = Registry("thing")

    assert registry.register("w", Widget) is Widget


def test_register_as_decorator() -> None:
    """Without a factory, ``register`` is a decorator that registers and returns the function."""
    # Prepare
    registry: Registry[int] = Registry("number")

    # Execute
    @registry.register("seven")
    def seven() -> int:
        return 7

    # Assert
    assert seven() == 7
    assert registry.get("seven") is seven
    assert registry.create("seven") == 7


def test_create_passes_keyword_arguments(reg: Registry[Any]) -> None:
    """``create`` calls the factory with the given keywords."""
    widget = reg.create("widget", size=4, colour="blue")

    assert isinstance(widget, Widget)
    assert (widget.size, widget.colour) == (4, "blue")


def test_create_accepts_a_keyword_called_name() -> None:
    """``name`` is positional-only in ``create``, so a factory may take ``name=`` itself."""
    registry: Registry[Any] = Registry("thing")
    registry.register("named", lambda name="x": name)

    assert registry.create("named", name="given") == "given"


def test_duplicate_name_is_refused(reg: Registry[Any]) -> None:
    """Registering a taken name raises a RegistryError and keeps the first entry."""
    with pytest.raises(RegistryError, match="'widget' is already registered"):
        reg.register("widget", make_anything)

    assert reg.get("widget") is Widget


@pytest.mark.parametrize("alias", ["WIDGET", "Widget", " widget "])
def test_duplicate_detection_normalises_names(reg: Registry[Any], alias: str) -> None:
    """Spelling variants of a taken name are duplicates too."""
    with pytest.raises(RegistryError, match="already registered"):
        reg.register(alias, make_anything)


def test_dash_underscore_duplicate_is_refused(reg: Registry[Any]) -> None:
    """``multi_krum`` is the same name as the registered ``multi-krum``."""
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("Multi_Krum", make_anything)


def test_registry_error_is_a_value_error() -> None:
    """Callers catching ValueError also catch registry errors."""
    assert issubclass(RegistryError, ValueError)


# ---------------------------------------------------------------------------- name matching


@pytest.mark.parametrize("spelling", ["multi-krum", "multi_krum", "Multi_Krum", "MULTI-KRUM"])
def test_lookup_is_case_insensitive_and_dash_equals_underscore(
    reg: Registry[Any], spelling: str
) -> None:
    """Case and ``-``/``_`` do not matter when looking a name up."""
    assert reg.get(spelling) is make_gadget
    assert spelling in reg


def test_unknown_name_lists_close_matches(reg: Registry[Any]) -> None:
    """A misspelt name gets a difflib suggestion and the list of known names."""
    with pytest.raises(RegistryError) as info:
        reg.get("widgit")

    message = str(info.value)
    assert "unknown widget 'widgit'" in message
    assert "did you mean widget?" in message
    assert "known: anything, multi_krum, widget" in message


def test_unknown_name_suggests_normalised_key(reg: Registry[Any]) -> None:
    """Suggestions use the normalised spelling of the registered name."""
    with pytest.raises(RegistryError, match="did you mean multi_krum"):
        reg.get("multi-krun")


def test_unknown_name_without_close_match_has_no_hint(reg: Registry[Any]) -> None:
    """A name resembling nothing gets no 'did you mean' but still lists the known names."""
    with pytest.raises(RegistryError) as info:
        reg.get("zzzzzzzz")

    assert "did you mean" not in str(info.value)
    assert "known: anything, multi_krum, widget" in str(info.value)


def test_create_unknown_name(reg: Registry[Any]) -> None:
    """``create`` with an unknown name raises the same RegistryError."""
    with pytest.raises(RegistryError, match="unknown widget"):
        reg.create("gizmo")


# ----------------------------------------------------------------------------- check_kwargs


def test_check_kwargs_accepts_valid_keywords(reg: Registry[Any]) -> None:
    """Positional-or-keyword and keyword-only parameters are accepted (no exception)."""
    assert reg.check_kwargs("widget", {"size": 3, "colour": "green"}, field="widget") is None
    assert reg.check_kwargs("widget", {}, field="widget") is None


def test_check_kwargs_rejects_unknown_keyword_with_field_prefix(reg: Registry[Any]) -> None:
    """An unknown keyword names ``field.key`` and suggests the close parameter."""
    with pytest.raises(RegistryError) as info:
        reg.check_kwargs("widget", {"size": 3, "color": "green"}, field="strategy")

    message = str(info.value)
    assert message.startswith("strategy.color: ")
    assert "has no parameter 'color'" in message
    assert "did you mean colour?" in message


def test_check_kwargs_rejects_positional_only_parameter(reg: Registry[Any]) -> None:
    """A positional-only parameter cannot be given by keyword, so it is rejected."""
    reg.check_kwargs("multi_krum", {"name": "x"}, field="strategy")

    with pytest.raises(RegistryError, match=r"^strategy\.weight: "):
        reg.check_kwargs("multi_krum", {"weight": 1.0}, field="strategy")


def test_check_kwargs_accepts_anything_for_var_keyword_factory(reg: Registry[Any]) -> None:
    """A ``**kwargs`` factory accepts any keyword."""
    assert reg.check_kwargs("anything", {"foo": 1, "bar": [2]}, field="x") is None


def test_check_kwargs_unknown_factory_name(reg: Registry[Any]) -> None:
    """Validating keywords for an unknown name raises the unknown-name error."""
    with pytest.raises(RegistryError, match="unknown widget 'nope'"):
        reg.check_kwargs("nope", {}, field="x")


def test_parameters_lists_the_signature(reg: Registry[Any]) -> None:
    """``parameters`` exposes the factory's parameters by name."""
    assert list(reg.parameters("widget")) == ["size", "colour"]


# ---------------------------------------------------------------------------- container API


def test_contains(reg: Registry[Any]) -> None:
    """``in`` normalises names and is False for unknown names and non-strings."""
    assert "widget" in reg
    assert "ANYTHING" in reg
    assert "gizmo" not in reg
    assert 42 not in reg
    assert None not in reg


def test_len_and_iter() -> None:
    """``len`` counts entries; iteration yields the normalised keys in insertion order."""
    # Prepare
    registry: Registry[Any] = Registry("thing")
    assert len(registry) == 0
    assert list(registry) == []

    # Execute
    registry.register("B-Two", Widget)
    registry.register("a_one", make_anything)

    # Assert
    assert len(registry) == 2
    assert list(registry) == ["b_two", "a_one"]


def test_kind_appears_in_messages() -> None:
    """The registry's ``kind`` labels its errors."""
    registry: Registry[Any] = Registry("aggregation strategy")

    with pytest.raises(RegistryError, match="unknown aggregation strategy 'x'"):
        registry.get("x")


def test_parameters_follow_kwargs_forwarding_along_the_mro() -> None:
    """A subclass forwarding **kwargs to its parent is validated with the parent's names."""

    class Base:
        def __init__(self, alpha: int = 1, beta: int = 2) -> None: ...

    class Child(Base):
        def __init__(self, *args: object, gamma: int = 3, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    registry: Registry[object] = Registry("thing")
    registry.register("child", Child)
    assert set(registry.parameters("child")) == {"alpha", "beta", "gamma"}
    registry.check_kwargs("child", {"alpha": 0, "gamma": 1}, field="thing")
    with pytest.raises(RegistryError, match=r"^thing\.delta"):
        registry.check_kwargs("child", {"delta": 0}, field="thing")
