"""Calls in flight: each waits for its reply or its timeout, whichever comes first, and is answered once.

    call ──admitted──> start(entry, timeout) ──reply (done frame)──> finish ──> caller(reply | error)
                              │                 └─recipient died──> fail ──> caller(agent_down)
                              └──timeout──> caller(timeout)

Calls are not persisted: a caller waiting on a daemon that died is gone too. The caller is the entry's
``caller``, a ``(result, error)`` callback from the broker's frame or control handler.
"""

from __future__ import annotations

from typing import Any

from daemon.broker.mailbox import Entry
from daemon.shell.loop import EventLoop, TimerHandle
from ipc.errors import ErrorCode, FoundationError


class PendingCalls:
    def __init__(self, loop: EventLoop) -> None:
        self._loop = loop
        self._timers: dict[str, TimerHandle] = {}  # call id -> its timeout

    def __len__(self) -> int:
        return len(self._timers)

    def start(self, entry: Entry, timeout: float) -> None:
        self._timers[entry.id] = self._loop.call_later(timeout, lambda: self._expire(entry, timeout))

    def finish(self, entry: Entry, msg: dict[str, Any]) -> None:
        """The recipient's ``done`` for a call: its reply or structured error goes to the caller."""
        timer = self._timers.pop(entry.id, None)
        if timer is None:
            return  # it timed out already; the caller has its answer
        timer.cancel()
        error = msg.get("error")
        if isinstance(error, dict):
            entry.caller(None, FoundationError.from_wire(error, unknown=ErrorCode.HANDLER_ERROR))
        else:
            entry.caller(msg.get("reply"), None)

    def fail(self, entry: Entry, code: ErrorCode, message: str) -> None:
        """``entry`` will never be answered (its recipient went away); a call's caller learns why."""
        if entry.kind == "call":
            timer = self._timers.pop(entry.id, None)
            if timer is not None:
                timer.cancel()
                entry.caller(None, FoundationError(code, message))

    def _expire(self, entry: Entry, timeout: float) -> None:
        if self._timers.pop(entry.id, None) is not None:
            entry.caller(None, FoundationError(ErrorCode.TIMEOUT, f"no reply within {timeout}s"))
