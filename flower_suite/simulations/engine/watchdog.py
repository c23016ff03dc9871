"""``WatchedGrid``: a Grid whose waits end when the backend fails or the run stops progressing.

Flower's ``send_and_receive`` without a timeout waits for every reply for ever, and the
ServerApp thread it blocks keeps the process alive after the simulation engine has died
("ActorPool is empty", a lost cluster node): the run hangs. This Grid waits the same way
(push, then pull until every reply is in) but gives up, raising, when

- ``abort`` is set: the runner sets it when Flower's simulation engine raises, or
- no reply has arrived for ``stall_s`` seconds while replies are awaited (the watchdog;
  0 = no watchdog). A caller's own ``timeout`` still ends the wait as Flower's does, with
  the replies that arrived.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

from flower_suite.forwarding_grid import ForwardingGrid

__all__ = ["BackendAbortedError", "SimulationStalledError", "WatchedGrid"]

PULL_INTERVAL_S = 0.05


class BackendAbortedError(RuntimeError):
    """The simulation engine failed while the server waited for replies."""


class SimulationStalledError(RuntimeError):
    """No reply arrived for the watchdog's interval while replies were awaited."""


class WatchedGrid(ForwardingGrid):
    """Forward everything to ``inner``; ``send_and_receive`` stops on ``abort`` or a stall."""

    def __init__(self, inner: Grid, abort: threading.Event, stall_s: float = 0.0) -> None:
        super().__init__(inner)
        self.abort = abort
        self.stall_s = stall_s
        self.reason = ""  # why ``abort`` was set, for the error message

    def stop(self, reason: str) -> None:
        """Make every wait, current and future, raise ``BackendAbortedError(reason)``."""
        self.reason = reason
        self.abort.set()

    def _check_abort(self) -> None:
        if self.abort.is_set():
            raise BackendAbortedError(self.reason or "the simulation engine stopped")

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        self._check_abort()
        awaited = set(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        last_progress = time.monotonic()
        replies: list[Message] = []
        while awaited:
            arrived = list(self.pull_messages(awaited))
            now = time.monotonic()
            if arrived:
                last_progress = now
                replies.extend(arrived)
                awaited.difference_update(m.metadata.reply_to_message_id for m in arrived)
                continue
            if deadline is not None and now >= deadline:
                break
            self._check_abort()
            if self.stall_s and now - last_progress > self.stall_s:
                raise SimulationStalledError(
                    f"no reply from {len(awaited)} node(s) for {self.stall_s:g} s "
                    "(watchdog_s); the simulation stopped making progress"
                )
            self.abort.wait(PULL_INTERVAL_S)
        return replies
