"""Fuzzing the broker's wire protocol (docs/messaging.md, ipc/wire.py) on a real foundationd, from a ZeroMQ DEALER:
random bytes, multipart messages, frames of every kind (the daemon's own included) with fields of the wrong types,
before and after an anonymous hello. Each input is followed by a sentinel call to a name that does not exist; its
answer (``no_such_agent``, or ``unauthorized`` without a session) proves that every earlier frame was handled, since
the broker answers a connection's frames in order. Every frame the daemon sends back is a JSON object with a kind;
the daemon stays up, the agent still answers, and RSS stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st

from agents.testing import DaemonProcess
from ipc.wire import MAX_MESSAGE
from tests.chaos.fuzzing import LONG, fuzz_settings, json_values, rss

pytestmark = [pytest.mark.timeout(0 if LONG else 120), pytest.mark.slow]

CONFIG = """
[[supervisor.children]]
name = "counter"
agent = "agents.examples.counter:Counter"
"""
KINDS = ["hello", "cast", "call", "done", "heartbeat", "monitor", "demonitor", "timer", "cancel_timer", "welcome",
         "accept", "reject", "deliver", "reply", "error", "down", "tick"]
FIELDS = {
    "ref": st.integers(-(2**63), 2**63 - 1) | json_values(3),
    "to": st.sampled_from(["counter", "nobody", "", "root", "coordinator"]) | json_values(3),
    "body": json_values(8),
    "chan": st.lists(st.integers(-5, 2**40), max_size=3) | json_values(3),
    "timeout": st.sampled_from([0, -1, 0.001, 0.5, 1e300, True]) | json_values(3),
    "id": st.sampled_from(["counter/1", "counter/call-1", "x"]) | json_values(3),
    "reply": json_values(4),
    "error": st.fixed_dictionaries({"code": st.text(max_size=10), "message": st.text(max_size=10)}) | json_values(3),
    "name": st.sampled_from([None, "counter", "nobody"]) | json_values(3),
    "token": st.sampled_from([None, "0" * 32]) | json_values(3),
    "target": st.sampled_from(["counter", "nobody"]) | json_values(3),
    "after": st.sampled_from([0, -1, 1e-9, 1e300]) | json_values(3),
    "every": st.sampled_from([None, 0, -1, 1e-9, 1e300]) | json_values(3),
}
SENTINEL = orjson.dumps({"kind": "call", "ref": -424242, "to": "no-such-agent-here", "body": None, "timeout": 1})
RSS_GROWTH = 64 << 20


def encode(frame: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(frame)
    except (TypeError, orjson.JSONEncodeError):  # an integer past 64 bits
        return repr(frame).encode()


frames = st.one_of(
    st.binary(max_size=200),
    st.fixed_dictionaries({"kind": st.sampled_from(KINDS) | json_values(2)},
                          optional=FIELDS).map(encode),
    json_values(5).map(encode),
)


@pytest.fixture
def broker(start_daemon: Any) -> Iterator[tuple[DaemonProcess, zmq.Context[Any]]]:
    d: DaemonProcess = start_daemon(CONFIG)
    d.wait_running("counter")
    assert d.proc is not None
    before = rss(d.proc.pid)
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        yield d, ctx
        assert d.proc.poll() is None, d.log()
        assert "count" in d.request("call", name="counter", body={"get": True})["reply"]
        assert rss(d.proc.pid) - before < RSS_GROWTH
    finally:
        ctx.destroy(linger=0)


def dealer(d: DaemonProcess, ctx: zmq.Context[Any]) -> zmq.Socket[Any]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    sock.connect(f"ipc://{d.runtime_dir}/broker.sock")
    return sock


def until_sentinel(sock: zmq.Socket[Any]) -> list[dict[str, Any]]:
    """Every frame the daemon sent up to the sentinel's answer; each must be a JSON object with a kind. The sentinel
    is a hello (refused when the connection already has a session) and a call, whose answer carries its ref."""
    sock.send(orjson.dumps({"kind": "hello", "name": None, "token": None}))
    sock.send(SENTINEL)
    got = []
    while True:
        frame = orjson.loads(sock.recv())
        assert isinstance(frame, dict), frame
        assert isinstance(frame.get("kind"), str), frame
        got.append(frame)
        if frame.get("ref") == -424242:
            assert frame["error"]["code"] == "no_such_agent", frame
            return got


@fuzz_settings(200)
@given(hello=st.booleans(), inputs=st.lists(frames | st.lists(frames, min_size=2, max_size=3), min_size=1,
                                             max_size=4))
def test_any_frames_are_answered_or_ignored_and_the_broker_lives(broker: Any, hello: bool, inputs: list[Any]) -> None:
    d, ctx = broker
    sock = dealer(d, ctx)
    try:
        if hello:
            sock.send(orjson.dumps({"kind": "hello", "name": None, "token": None}))
            assert orjson.loads(sock.recv())["kind"] == "welcome"
        for item in inputs:
            if isinstance(item, list):
                sock.send_multipart(item)
            else:
                sock.send(item)
        until_sentinel(sock)
    finally:
        sock.close(linger=0)
    assert d.proc is not None
    assert d.proc.poll() is None, d.log()[-3000:]


def test_an_oversized_frame_drops_only_that_connection(broker: Any) -> None:
    d, ctx = broker
    big = dealer(d, ctx)
    big.send(b'{"kind": "hello", "name": null, "token": null, "pad": "' + b"x" * MAX_MESSAGE + b'"}')
    other = dealer(d, ctx)
    other.send(orjson.dumps({"kind": "hello", "name": None, "token": None}))
    assert orjson.loads(other.recv())["kind"] == "welcome"
    other.send(orjson.dumps({"kind": "call", "ref": 1, "to": "counter", "body": {"get": True}, "timeout": 5}))
    assert orjson.loads(other.recv()) == {"kind": "reply", "ref": 1, "body": {"count": 0}}
    big.close(linger=0)
    other.close(linger=0)


def test_many_connections_that_never_say_hello(broker: Any) -> None:
    d, ctx = broker
    socks = [dealer(d, ctx) for _ in range(200)]
    for sock in socks:
        sock.send(b"{")
    for sock in socks[:20]:
        assert orjson.loads(sock.recv())["error"]["code"] == "bad_request"
    for sock in socks:
        sock.close(linger=0)
    assert d.request("call", name="counter", body={"get": True})["reply"] == {"count": 0}
