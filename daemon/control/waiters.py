"""Control requests whose answer waits for the tree: "answer when this holds", checked after every batch of events.

A verb such as ``restart`` changes the tree at once but is answered only when the child has settled; the app calls
:meth:`Waiters.check` after each batch of core actions, so no waiter polls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from daemon.shell.loop import TimerHandle

WAIT_LIMIT = 25.0  # longest a control request waits for its operation (the CLI gives up at 30 s)
LONGEST_WAIT = 3600.0  # what a request may ask for instead (``"wait": S``; foundationctl --wait)

CallLater = Callable[[float, Callable[[], None]], TimerHandle]


class Waiter:
    """A reply that waits until ``done()`` holds; then ``answer()`` is sent."""

    def __init__(self, done: Callable[[], bool], answer: Callable[[], Any], reply: Callable[[Any], Any]) -> None:
        self.done, self.answer, self.reply = done, answer, reply
        self.timer: TimerHandle | None = None


class Waiters:
    def __init__(self, call_later: CallLater) -> None:
        self._call_later = call_later
        self._waiting: list[Waiter] = []

    def wait(self, done: Callable[[], bool], answer: Callable[[], Any], reply: Callable[[Any], Any],
             limit: float = WAIT_LIMIT) -> None:
        """Reply with ``answer()`` once ``done()`` holds, or after ``limit`` seconds with ``pending: true`` added."""
        if done():
            reply(answer())
            return
        waiter = Waiter(done, answer, reply)
        self._waiting.append(waiter)
        waiter.timer = self._call_later(limit, lambda: self._expire(waiter))

    def when(self, done: Callable[[], bool], then: Callable[[], None]) -> None:
        """Run ``then`` once ``done()`` holds; no deadline."""
        if done():
            then()
        else:
            self._waiting.append(Waiter(done, then, lambda _: None))

    def check(self) -> None:
        for waiter in [w for w in self._waiting if w.done()]:
            if waiter not in self._waiting:  # answered already by a nested check (a `when` callback applies actions)
                continue
            self._waiting.remove(waiter)
            if waiter.timer is not None:
                waiter.timer.cancel()
            waiter.reply(waiter.answer())

    def _expire(self, waiter: Waiter) -> None:
        if waiter in self._waiting:
            self._waiting.remove(waiter)
            waiter.reply({**waiter.answer(), "pending": True})
