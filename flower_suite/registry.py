"""A small name -> factory registry, shared by strategies, models and data sets.

The simulation config resolves every name (``strategy.name = "fedavg"``) through one of
these, so a later module only has to call ``register`` to become usable from a TOML file.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(ValueError):
    """A name or a parameter that a registry cannot resolve."""


def accepted_parameters(factory: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """Keyword parameters of ``factory``; for classes, merged along ``**kwargs`` forwarding."""
    if not inspect.isclass(factory):
        return dict(inspect.signature(factory).parameters)
    merged: dict[str, inspect.Parameter] = {}
    for klass in factory.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters
        forwards = False
        for key, param in list(params.items())[1:]:  # skip self
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                forwards = True
            elif param.kind is not inspect.Parameter.VAR_POSITIONAL:
                merged.setdefault(key, param)
        if not forwards:
            return merged
    # The chain ends in a **kwargs sink: keep that open.
    merged["kwargs"] = inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)
    return merged


class Registry(Generic[T]):
    """Maps names to factories (classes or functions returning ``T``).

    Names are case-insensitive and ``-``/``_`` are interchangeable, so ``multi-krum`` and
    ``Multi_Krum`` resolve to the same entry. Registering a taken name is refused.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    @staticmethod
    def _key(name: str) -> str:
        return name.strip().lower().replace("-", "_")

    def register(self, name: str, factory: Callable[..., T] | None = None) -> Callable[..., Any]:
        """Register ``factory`` under ``name``; usable as a decorator when ``factory`` is None."""

        def _add(fn: Callable[..., T]) -> Callable[..., T]:
            key = self._key(name)
            if key in self._factories:
                raise RegistryError(f"{self.kind} {name!r} is already registered")
            self._factories[key] = fn
            return fn

        return _add(factory) if factory is not None else _add

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name``; a clear error with suggestions otherwise."""
        key = self._key(name)
        if key not in self._factories:
            close = difflib.get_close_matches(key, self._factories, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise RegistryError(
                f"unknown {self.kind} {name!r}{hint} (known: {', '.join(sorted(self))})"
            )
        return self._factories[key]

    def parameters(self, name: str) -> Mapping[str, inspect.Parameter]:
        """The keyword parameters the factory accepts (used to validate configs).

        For a class whose ``__init__`` forwards ``**kwargs`` to its parent, the parents'
        parameters are merged in (walking the MRO), so configs are still checked by name.
        """
        return accepted_parameters(self.get(name))

    def check_kwargs(self, name: str, kwargs: Mapping[str, Any], *, field: str) -> None:
        """Raise a ``RegistryError`` naming ``field.<key>`` for any parameter not accepted."""
        params = self.parameters(name)
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return
        accepted = {
            k
            for k, p in params.items()
            if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        }
        for key in kwargs:
            if key not in accepted:
                close = difflib.get_close_matches(key, accepted, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise RegistryError(
                    f"{field}.{key}: {self.kind} {name!r} has no parameter {key!r}{hint}"
                )

    def create(self, name: str, /, **kwargs: Any) -> T:
        """Instantiate the entry ``name`` with ``kwargs``."""
        return self.get(name)(**kwargs)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self._factories)

    def __len__(self) -> int:
        return len(self._factories)
