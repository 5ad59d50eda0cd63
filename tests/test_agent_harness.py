"""AgentHarness, the in-process runner for unit tests of agents, judges a handler's outcome as the runtime does.

Both call ``agents.runtime.check_outcome``; the last test holds them to it with a real daemon: what fails a
message there fails the same way, with the same code and message, in the harness.
"""

from __future__ import annotations

from typing import Any

import pytest
from agents_for_tests import Careless, Recorder
from helpers import REPO

from agents.examples.counter import Counter
from agents.runtime import MAX_REPLY
from agents.sdk import Agent, InvalidState
from agents.testing import AgentHarness, wait_for
from ipc import wire
from ipc.errors import ErrorCode, FoundationError


class Busy(Agent):
    """Counts what it handles, reaches out from its handlers and records every accepted state."""

    def init(self) -> dict[str, Any]:
        return {"n": 0}

    def mount(self, state: dict[str, Any]) -> None:
        self.mounted = state
        self.accepted: list[dict[str, Any]] = []

    def handle_cast(self, msg: Any, state: dict[str, Any]) -> Any:
        if msg == "none":
            return None
        if msg == "set":
            return {"n": {1}}
        if msg == "raise":
            raise ValueError("no")
        if msg == "reach out":
            self.send("peer", {"hi": 1})
            self.set_timer(0.5, every=1.0)
            self.monitor("peer")
        return {"n": state["n"] + 1}

    def handle_call(self, msg: Any, state: dict[str, Any]) -> tuple[Any, Any]:
        if msg == "unstorable":
            return "ok", {"n": object()}
        if isinstance(msg, dict) and "size" in msg:  # a string reply of exactly this many encoded bytes
            return "x" * (msg["size"] - 2), {"n": state["n"] + 1}
        if msg == "unencodable":
            return {1, 2}, {"n": state["n"] + 1}
        if msg == "ask":
            return self.call("peer", {"q": 1}), state
        return state["n"], state

    def handle_info(self, info: Any, state: dict[str, Any]) -> Any:
        return {"n": state["n"] + 100}

    def on_after_validate_state(self, state: dict[str, Any]) -> None:
        self.accepted.append(state)


# ---- the happy paths ----


def test_casts_and_calls_change_the_state_and_each_accepted_state_is_announced() -> None:
    h = AgentHarness(Counter)
    assert h.state == {"count": 0}
    assert h.cast({"add": 2}) == {"count": 2}
    assert h.call({"get": True}) == {"count": 2}
    assert h.state == {"count": 2}

    b = AgentHarness(Busy, state={"n": 5})
    assert b.agent.mounted == {"n": 5}
    b.cast("one")
    assert b.call("n") == 6
    assert b.agent.accepted == [{"n": 6}, {"n": 6}]


def test_what_the_agent_asks_of_its_runtime_is_recorded() -> None:
    h = AgentHarness(Busy, call_replies=lambda to, body: {"from": to, "echo": body})
    h.cast("reach out")
    assert h.sent == [("peer", {"hi": 1})]
    [(timer, every)] = h.timers.values()
    assert (timer, every) == (0.5, 1.0)
    [ref] = h.monitors
    assert h.monitors[ref] == "peer"
    assert h.down(ref) == {"n": 101}
    assert h.call("ask") == {"from": "peer", "echo": {"q": 1}}
    assert h.calls == [("peer", {"q": 1})]


def test_a_reply_of_exactly_the_limit_is_accepted() -> None:
    h = AgentHarness(Busy)
    assert len(h.call({"size": MAX_REPLY})) == MAX_REPLY - 2
    assert h.state == {"n": 1}


# ---- what fails a message: the old state stays, the error reaches the test ----


@pytest.mark.parametrize(("body", "says"), [
    ("none", "returned None"),
    ("set", "cannot be stored"),
])
def test_a_cast_returning_a_state_that_cannot_be_stored_fails_and_keeps_the_old_state(body: str, says: str) -> None:
    h = AgentHarness(Busy)
    h.cast("one")
    with pytest.raises(InvalidState) as caught:
        h.cast(body)
    assert caught.value.code == ErrorCode.INVALID_STATE
    assert says in caught.value.message
    assert h.state == {"n": 1}
    assert h.agent.accepted == [{"n": 1}]


def test_a_call_returning_a_state_that_cannot_be_stored_fails_even_with_a_good_reply() -> None:
    h = AgentHarness(Busy)
    with pytest.raises(InvalidState, match="cannot be stored"):
        h.call("unstorable")
    assert h.state == {"n": 0}


@pytest.mark.parametrize(("body", "code", "says"), [
    ({"size": MAX_REPLY + 1}, ErrorCode.TOO_LARGE, f"the limit is {MAX_REPLY}"),
    ("unencodable", ErrorCode.HANDLER_ERROR, "cannot be encoded"),
])
def test_a_reply_that_could_not_travel_fails_the_call_and_keeps_the_old_state(body: Any, code: ErrorCode,
                                                                               says: str) -> None:
    h = AgentHarness(Busy)
    with pytest.raises(FoundationError) as caught:
        h.call(body)
    assert caught.value.code == code
    assert says in caught.value.message
    assert h.state == {"n": 0}
    assert h.agent.accepted == []


def test_a_state_the_schema_rejects_fails_and_a_raising_handler_keeps_the_old_state() -> None:
    h = AgentHarness(Counter)
    with pytest.raises(InvalidState, match="rejected by schema"):
        h.cast({"add": 1.5})  # the count must stay an int
    assert h.state == {"count": 0}
    h2 = AgentHarness(Busy)
    with pytest.raises(ValueError, match="no"):
        h2.cast("raise")
    assert h2.state == {"n": 0}
    with pytest.raises(InvalidState, match="rejected by schema"):
        AgentHarness(Counter, state={"count": "zero"})


# ---- the harness and the runtime agree ----


def test_what_fails_in_the_runtime_fails_alike_in_the_harness(start_daemon) -> None:
    daemon = start_daemon(f"""
        [supervisor]
        intensity = 1000
        period = 1
        [[supervisor.children]]
        name = "rec"
        agent = "tests.agents_for_tests:Recorder"
        working_dir = "{REPO}"
        [[supervisor.children]]
        name = "careless"
        agent = "tests.agents_for_tests:Careless"
        working_dir = "{REPO}"
    """)
    pids = {name: daemon.wait_running(name) for name in ("rec", "careless")}
    # Calls: the runtime answers the caller with the error; the harness raises the same one.
    rec = AgentHarness(Recorder)
    for body in ({"big": wire.MAX_MESSAGE}, {"unencodable": True}):
        with pytest.raises(FoundationError) as in_runtime:
            daemon.request("call", name="rec", body=body)
        with pytest.raises(FoundationError) as in_harness:
            rec.call(body)
        assert (in_harness.value.code, in_harness.value.message) == (in_runtime.value.code, in_runtime.value.message)
    assert rec.state == daemon.request("call", name="rec", body={"get": True})["reply"] == {"got": []}
    # Casts: the runtime logs the error and carries on; the harness raises it.
    careless = AgentHarness(Careless)
    for body in ({"none": True}, {"set": True}):
        mid = daemon.request("send", name="careless", body=body)["id"]
        with pytest.raises(InvalidState) as in_harness:
            careless.cast(body)
        daemon.wait_log(f"agent careless: invalid state on {mid}")
        wait_for(lambda err=in_harness.value: f"InvalidState: {err}" in daemon.log(), what="the runtime's error")
    assert careless.state == daemon.request("call", name="careless", body={"get": True})["reply"] == {"v": 0}
    assert {name: daemon.pid(name) for name in pids} == pids
