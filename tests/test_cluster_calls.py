"""Deferred calls (daemon/broker/calls.py): a recipient that answers later (the cluster bridge) is answered once:
by its answer, by the caller's timeout, or with agent_down when it dies; never twice, never by someone else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from daemon.broker.calls import PendingCalls
from daemon.broker.mailbox import Entry
from ipc.errors import FoundationError


class Timer:
    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback, self.cancelled = callback, False

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    """call_later only: the test fires the timers itself."""

    def __init__(self) -> None:
        self.timers: list[Timer] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        self.timers.append(Timer(callback))
        return self.timers[-1]

    def fire(self) -> None:
        for timer in self.timers:
            if not timer.cancelled:
                timer.callback()


def call(answers: list[tuple[Any, Any]], call_id: str = "bridge/1") -> Entry:
    return Entry(call_id, None, None, {}, kind="call", caller=lambda result, err: answers.append((result, err)))


def test_a_deferred_call_is_answered_once_by_its_owner() -> None:
    loop, answers = Loop(), []
    calls = PendingCalls(loop)  # type: ignore[arg-type]
    entry = call(answers)
    calls.start(entry, 5.0)
    calls.defer(entry, "bridge")
    calls.answer("someone-else", {"id": "bridge/1", "reply": "forged"})
    assert answers == []
    calls.answer("bridge", {"id": "bridge/1", "reply": {"count": 3}})
    calls.answer("bridge", {"id": "bridge/1", "reply": {"count": 4}})
    loop.fire()  # the timeout was cancelled
    assert answers == [({"count": 3}, None)]
    assert len(calls) == 0


def test_a_deferred_call_times_out_or_fails_when_its_owner_dies() -> None:
    loop, answers = Loop(), []
    calls = PendingCalls(loop)  # type: ignore[arg-type]
    late, orphan = call(answers, "bridge/1"), call(answers, "bridge/2")
    for entry in (late, orphan):
        calls.start(entry, 5.0)
        calls.defer(entry, "bridge")
    loop.timers[0].callback()  # bridge/1's timeout
    calls.answer("bridge", {"id": "bridge/1", "reply": "too late"})
    calls.owner_down("bridge")
    codes = [err.code for _, err in answers if isinstance(err, FoundationError)]
    assert codes == ["timeout", "agent_down"]
    assert len(answers) == 2
