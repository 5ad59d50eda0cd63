"""Calls in flight: each waits for its reply or its timeout, whichever comes first, and is answered once.

    call ──admitted──> start(entry, timeout) ──reply (done frame)──> finish ──> caller(reply | error)
                              │                 └─recipient died──> fail ──> caller(agent_down)
                              └──timeout──> caller(timeout)

Calls are not persisted: a caller waiting on a daemon that died is gone too. The caller is the entry's
``caller``, a ``(result, error)`` callback from the broker's frame or control handler.

A recipient may defer its answer (``done {deferred}``, then ``answer {id, reply|error}``; the cluster bridge does
for calls to other nodes): the call leaves the recipient's mailbox (its window is free for the next message) and
waits here, under the same timeout, until the answer, the timeout or the recipient's death.
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
        self._deferred: dict[str, tuple[str, Entry]] = {}  # call id -> (the recipient that will answer, entry)

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

    def defer(self, entry: Entry, owner: str) -> None:
        """``owner`` took the call and answers it later (``answer``)."""
        if entry.id in self._timers:
            self._deferred[entry.id] = (owner, entry)

    def answer(self, owner: str, msg: dict[str, Any]) -> None:
        """A deferred call's answer; one for a call that is not ``owner``'s, or has timed out, is dropped."""
        held = self._deferred.get(msg["id"])
        if held is not None and held[0] == owner:
            del self._deferred[msg["id"]]
            self.finish(held[1], msg)

    def owner_down(self, owner: str) -> None:
        """``owner`` died: the calls it deferred are answered ``agent_down`` now, not at their timeouts."""
        for call_id, (name, entry) in list(self._deferred.items()):
            if name == owner:
                del self._deferred[call_id]
                self.fail(entry, ErrorCode.AGENT_DOWN, f"{owner} went down before it answered")

    def fail(self, entry: Entry, code: ErrorCode, message: str) -> None:
        """``entry`` will never be answered (its recipient went away); a call's caller learns why."""
        if entry.kind == "call":
            timer = self._timers.pop(entry.id, None)
            if timer is not None:
                timer.cancel()
                entry.caller(None, FoundationError(code, message))

    def _expire(self, entry: Entry, timeout: float) -> None:
        self._deferred.pop(entry.id, None)
        if self._timers.pop(entry.id, None) is not None:
            entry.caller(None, FoundationError(ErrorCode.TIMEOUT, f"no reply within {timeout}s"))
