"""Resuming a broker session after an in-place upgrade (daemon/broker/resume.py, agents/runtime.py), in-process on
a real loop and real ZeroMQ sockets: the new image's side drops a handed-over session's frames until ``resumed``,
asks once; the agent's side sends again exactly the frames after ``received``, in order, and refuses a gap it no
longer covers. The whole exchange across a real exec is in tests/test_upgrade.py."""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from agents.runtime import AgentRuntime
from agents.sdk import Agent
from daemon.broker.peers import Peers, Session
from daemon.broker.resume import refusal
from daemon.broker.timers import Timers
from daemon.shell.loop import EventLoop
from ipc import wire

pytestmark = pytest.mark.timeout(30)
IDENTITY = b"agent-0123456789abcdef"


def turns_until(loop: EventLoop, done: Callable[[], bool], limit: int = 20_000) -> None:
    for _ in range(limit):
        if done():
            return
        loop.call_later(0.001, lambda: None)  # a short turn: the test acts between turns
        loop.run_once()
    raise AssertionError("the condition never held")


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[tuple[Peers, EventLoop, list[Any]]]:
    loop = EventLoop()
    seen: list[Any] = []
    handlers = {"cast": lambda s, m: seen.append(m["ref"]), "heartbeat": lambda s, m: seen.append("beat")}
    p = Peers(tmp_path, loop, heartbeat=1.0, handlers=handlers, on_hello=lambda name: None)
    p.on_resumed = lambda name: seen.append(f"resumed {name}")
    yield p, loop, seen
    p.close()
    loop.close()


@pytest.fixture
def dealer(peers: tuple[Peers, EventLoop, list[Any]]) -> Iterator[zmq.Socket[bytes]]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, IDENTITY)
    sock.connect(peers[0].endpoint)
    yield sock
    sock.close()
    ctx.term()


def test_a_handed_over_session_drops_frames_until_resumed_and_asks_once(peers, dealer) -> None:
    p, loop, seen = peers
    p.adopt([{"name": "a", "identity": IDENTITY.hex(), "received": 5, "last_seen": 0.0, "busy_until": 0.0}])
    session = p.session("a")
    assert session is not None
    assert session.resuming
    dealer.send(wire.encode("cast", ref=6, to="b", body=None))  # frame 6: may or may not have reached the old image
    dealer.send(wire.encode("heartbeat"))  # frame 7
    turns_until(loop, lambda: bool(dealer.poll(0)))
    assert wire.decode(dealer.recv()) == {"kind": "resume", "received": 5}
    assert seen == []
    dealer.send(wire.encode("resumed", sent=7))
    dealer.send(wire.encode("cast", ref=6, to="b", body=None))  # sent again: these are the ones that count
    dealer.send(wire.encode("heartbeat"))
    dealer.send(wire.encode("cast", ref=8, to="b", body=None))  # a new one
    turns_until(loop, lambda: len(seen) == 4)
    assert seen == ["resumed a", 6, "beat", 8]
    assert session.received == 8
    assert not session.resuming
    assert not dealer.poll(50)  # asked once only


def test_the_session_is_handed_over_with_its_count(peers) -> None:
    p, _, _ = peers
    p.adopt([{"name": "a", "identity": IDENTITY.hex(), "received": 5, "last_seen": 1.5, "busy_until": 2.0}])
    assert p.hand_over() == [{"name": "a", "identity": IDENTITY.hex(), "received": 5, "last_seen": 1.5,
                              "busy_until": 2.0}]


class _Broker:
    def __init__(self, sessions: dict[str, Session]) -> None:
        self._peers = self
        self._sessions = sessions

    def session(self, name: str) -> Session | None:
        return self._sessions.get(name)

    def anonymous(self) -> int:
        return 0


@pytest.mark.parametrize(("session", "why"), [
    (None, "a is not connected to the broker"),
    (Session(b"x", "a", resumable=False), "a runs an agent runtime that cannot resume"),
    (Session(b"x", "a", resumable=True, resuming=True), "a has not resumed from the last upgrade yet"),
    (Session(b"x", "a", resumable=True), None),
])
def test_which_sessions_can_be_handed_over(session: Session | None, why: str | None) -> None:
    broker: Any = _Broker({"a": session} if session is not None else {})
    found = refusal(broker, ["a"])
    assert (found is None) if why is None else (found is not None and found.startswith(why))


class _Store:
    def close(self) -> None:
        pass


def test_the_agent_sends_again_exactly_what_the_new_image_did_not_handle(tmp_path: Path) -> None:
    router_ctx = zmq.Context()
    router = router_ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    endpoint = f"ipc://{tmp_path}/r.sock"
    router.bind(endpoint)
    runtime = AgentRuntime(Agent(), "a", endpoint, "token", _Store())  # type: ignore[arg-type]
    try:
        runtime._sock.connect(endpoint)  # (what run() does)
        runtime._send("hello", name="a", token="token", resume=True)
        runtime._sent = 0  # (what _hello does once the hello is out)
        for ref in range(1, 6):
            runtime._send("cast", ref=ref, to="b", body=None)

        def frames(count: int) -> list[dict[str, Any]]:
            out = []
            for _ in range(count):
                assert router.poll(5000)
                identity, raw = router.recv_multipart()
                assert identity.startswith(b"agent-")
                out.append(wire.decode(raw))
            return out

        assert [f["kind"] for f in frames(6)] == ["hello", "cast", "cast", "cast", "cast", "cast"]
        runtime._resume(3)
        assert frames(3) == [{"kind": "resumed", "sent": 5}, {"kind": "cast", "ref": 4, "to": "b", "body": None},
                             {"kind": "cast", "ref": 5, "to": "b", "body": None}]
        runtime._resume(5)  # nothing missing: only the answer
        assert frames(1) == [{"kind": "resumed", "sent": 5}]
        assert runtime._sent == 5
        runtime._ring.clear()
        with pytest.raises(SystemExit, match="cannot resume"):
            runtime._resume(2)
    finally:
        runtime._sock.close(linger=0)
        runtime._ctx.term()
        router.close()
        router_ctx.term()


@pytest.mark.skipif(os.geteuid() != 0, reason="a broker socket for another user needs a root daemon")
def test_the_broker_sockets_of_other_users_are_bound_again(tmp_path: Path) -> None:
    """Agents with ``user`` connect to broker-UID.sock: the old image hands the (uid, gid) over, the new one binds
    it again, owned by that user, before anything reconnects."""
    nobody = pwd.getpwnam("nobody")
    loop = EventLoop()
    old = Peers(tmp_path, loop, heartbeat=1.0, handlers={}, on_hello=lambda name: None)
    old.endpoint_for(nobody.pw_uid, nobody.pw_gid)
    handed = old.user_sockets()
    old.close()
    path = tmp_path / f"broker-{nobody.pw_uid}.sock"
    assert handed == [[nobody.pw_uid, nobody.pw_gid]]
    assert not path.exists()
    new = Peers(tmp_path, loop, heartbeat=1.0, handlers={}, on_hello=lambda name: None)
    try:
        for uid, gid in handed:
            new.endpoint_for(uid, gid)
        assert (path.stat().st_uid, stat.S_IMODE(path.stat().st_mode)) == (nobody.pw_uid, 0o600)
    finally:
        new.close()
        loop.close()


def test_agents_timers_are_handed_over_due_when_they_would_have_been() -> None:
    now = [100.0]
    ticks: list[tuple[str, int]] = []
    old_loop = EventLoop(clock=lambda: now[0])
    old = Timers(old_loop, lambda name, ref: ticks.append((name, ref)))
    old.set("a", 1, after=5.0, every=None)  # one-shot, due at 105
    old.set("a", 2, after=1.0, every=2.0)  # periodic, due at 101, 103, ...
    old.set("b", 3, after=1.0, every=None)
    old.cancel("b", 3)
    old.ticked("a", 9)
    handed = old.hand_over()
    assert handed == [{"name": "a", "armed": [[1, 105.0, None], [2, 101.0, 2.0]], "ticking": []},
                      {"name": "b", "armed": [], "ticking": []}]
    old_loop.close()
    new_loop = EventLoop(clock=lambda: now[0])
    new = Timers(new_loop, lambda name, ref: ticks.append((name, ref)))
    new.adopt(handed)
    try:
        for at, expected in [(100.5, []), (101.0, [("a", 2)]), (103.0, [("a", 2)]), (105.0, [("a", 2), ("a", 1)])]:
            now[0] = at
            new_loop.call_later(0, lambda: None)  # due now: the turn does not wait
            new_loop.run_once()
            assert sorted(ticks) == sorted(expected), at
            new.ticked("a", 2)  # done with it: the next may come
            ticks.clear()
    finally:
        new_loop.close()
