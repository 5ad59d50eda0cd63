"""Deferred calls (daemon/broker/calls.py, AgentRuntime.defer_reply): a recipient that answers later (the cluster
bridge) is answered once: by its answer, by the caller's timeout, or with agent_down when it dies; never twice, never
by someone else."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from helpers import REPO

from daemon.broker.calls import PendingCalls
from daemon.broker.mailbox import Entry
from ipc.errors import FoundationError

pytestmark = pytest.mark.timeout(60)


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


def test_an_agent_answers_calls_later_from_what_its_own_thread_posted(start_daemon: Any) -> None:
    """The runtime half, without NATS: post() wakes the agent's loop; a deferred call is answered by reply(),
    times out when never answered, and fails with agent_down when the agent dies holding it."""
    d = start_daemon(f"""
        [[supervisor.children]]
        name = "later"
        agent = "tests.agents_for_tests:Deferrer"
        working_dir = "{REPO}"
        """)
    d.wait_running("later")
    assert d.request("call", name="later", body={"double": 21}, timeout=5)["reply"] == 42
    replies = [d.request("call", name="later", body={"double": i}, timeout=5)["reply"] for i in range(20)]
    assert replies == [2 * i for i in range(20)]
    with pytest.raises(FoundationError) as never:
        d.request("call", name="later", body={"never": True}, timeout=0.5)
    assert never.value.code == "timeout"
    started = time.monotonic()
    with pytest.raises(FoundationError) as died:
        d.request("call", name="later", body={"die": True}, timeout=30)
    assert died.value.code == "agent_down"
    assert time.monotonic() - started < 15  # at its death, not at the timeout
    d.wait_running("later")
    assert d.request("call", name="later", body={"double": 1}, timeout=5)["reply"] == 2
