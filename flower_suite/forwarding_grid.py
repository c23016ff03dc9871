"""``ForwardingGrid``: a Flower ``Grid`` that passes every call to the Grid it wraps.

Our server-side wrappers (byte metering, forced attacker participation, the omniscient
Byzantine injector) each change one or two calls; they subclass this and override only those.
Attributes the wrapper lacks are read from the wrapped Grid, so a stack of wrappers still
exposes, e.g., the metering Grid's ``partitions``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid


class ForwardingGrid(Grid):
    """Forward the whole Grid API to ``inner``."""

    def __init__(self, inner: Grid) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes this wrapper lacks; `inner` itself must exist first.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def run(self) -> Any:  # type: ignore[override]
        return self.inner.run

    def set_run(self, run_id: int) -> None:
        self.inner.set_run(run_id)

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return self.inner.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def get_nodes(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.get_nodes(*args, **kwargs)  # type: ignore[attr-defined]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.inner.send_and_receive(messages, timeout=timeout)
