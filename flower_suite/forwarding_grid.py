"""``ForwardingGrid``: a Flower ``Grid`` that passes every call to the Grid it wraps.

Our server-side wrappers (byte metering, forced attacker participation, the omniscient
Byzantine injector) each change one or two calls; they subclass this and override only those.
Attributes the wrapper lacks are read from the wrapped Grid, so a stack of wrappers still
exposes, e.g., the metering Grid's ``partitions``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from flower_suite.flower_compat import NodeInfo, Run


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
    def run(self) -> Run:
        return self.inner.run

    def set_run(self, run: Run) -> None:
        self.inner.set_run(run)

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        return self.inner.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    # Flower 1.43 renames the parameter (``reply_to_message_ids``, ``message_ids`` kept as a
    # deprecated keyword): forward the call as made, so both signatures are overridden.
    def pull_messages(self, *args: Any, **kwargs: Any) -> Iterable[Message]:
        return self.inner.pull_messages(*args, **kwargs)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.inner.send_and_receive(messages, timeout=timeout)
