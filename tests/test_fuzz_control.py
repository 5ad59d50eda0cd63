"""Fuzzing the control socket of a real foundationd (issue 16, item 4): random bytes, malformed, truncated,
oversized and deeply nested lines, and requests of every verb with arguments of the wrong types. The daemon never
dies, answers every complete line with one reply (or drops the connection), keeps answering others (a fresh
``status`` after every input), logs no traceback (the plugin checks) and its RSS stays bounded.

``make test`` runs a CI-sized, derandomized number of inputs; ``make fuzz`` the long run (FUZZ_EXAMPLES each).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.testing import DaemonProcess
from daemon.control.verbs import VERBS
from ipc.control import MAX_LINE, ControlClient
from tests.chaos.fuzzing import LONG, fuzz_settings, json_values, nested, rss

pytestmark = [pytest.mark.timeout(0 if LONG else 120), pytest.mark.slow]

CONFIG = """
[supervisor]
intensity = 1000
period = 1
[[supervisor.children]]
name = "counter"
agent = "agents.examples.counter:Counter"
"""
# Verbs left out of random requests: the ones that end or replace the daemon (that is not a crash), and the ones
# that would run a program if a random request happened to be well formed.
UNSAFE = {"shutdown", "upgrade", "attach", "task", "save"}
VERB_NAMES = sorted(set(VERBS) - UNSAFE)
# Verbs whose reply may legitimately wait (for a child to stop, a call, a stream, a workflow): no reply in time is
# not a failure for them, only for the rest.
MAY_WAIT = {"start", "stop", "restart", "call", "logs", "events", "history", "workflow", "reload", "doctor",
            "detach", "send", "signal"}
RSS_GROWTH = 64 << 20


@pytest.fixture
def daemon(start_daemon: Any) -> Iterator[DaemonProcess]:
    d: DaemonProcess = start_daemon(CONFIG)
    d.wait_running("counter")
    assert d.proc is not None
    before = rss(d.proc.pid)
    yield d
    assert d.proc.poll() is None, d.log()
    assert d.status()["tree"]["name"] == "root"
    assert rss(d.proc.pid) - before < RSS_GROWTH


def exchange(d: DaemonProcess, payload: bytes, timeout: float = 5.0, close_write: bool = False) -> list[bytes]:
    """Send raw bytes on a fresh connection; return the reply lines that came before the deadline or the close."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(d.socket_path)
        try:
            sock.sendall(payload)
            if close_write:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return []
        expected = payload.count(b"\n")
        data = b""
        try:
            while data.count(b"\n") < expected:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return data.splitlines()


def alive(d: DaemonProcess) -> None:
    assert d.proc is not None
    assert d.proc.poll() is None, f"foundationd died: {d.log()[-3000:]}"
    with ControlClient(d.socket_path, timeout=10) as client:
        assert client.request("pid") is not None


def error_reply(line: bytes) -> dict[str, Any]:
    reply = orjson.loads(line)
    assert isinstance(reply, dict)
    assert reply["ok"] is False, reply
    assert isinstance(reply["error"]["code"], str)
    return reply


@fuzz_settings(150)
@given(st.binary(max_size=300).filter(lambda b: b"\n" not in b and b.strip()))
def test_random_bytes_are_answered_with_an_error(daemon: DaemonProcess, junk: bytes) -> None:
    lines = exchange(daemon, junk + b"\n")
    try:
        request = orjson.loads(junk)
    except orjson.JSONDecodeError:
        request = None
    if not (isinstance(request, dict) and isinstance(request.get("verb"), str)):
        assert len(lines) == 1, lines  # not a request: one error reply, at once
        error_reply(lines[0])
    alive(daemon)


requests = st.fixed_dictionaries(
    {"verb": st.sampled_from(VERB_NAMES) | json_values(4)},
    optional={"id": json_values(4), "args": st.dictionaries(
        st.sampled_from(["name", "body", "timeout", "producer", "seq", "op", "id", "signal", "follow", "wait",
                         "lines", "state", "step", "done", "retry", "definition"]) | st.text(max_size=8),
        json_values(6), max_size=5) | json_values(4)})


@fuzz_settings(200)
@given(requests)
def test_requests_of_every_verb_with_wrong_types(daemon: DaemonProcess, request: dict[str, Any]) -> None:
    try:
        line = orjson.dumps(request) + b"\n"
    except (TypeError, orjson.JSONEncodeError):  # an integer past 64 bits: write it by hand
        line = repr(request).encode() + b"\n"
    lines = exchange(daemon, line, timeout=3.0)
    verb = request.get("verb")
    if lines:
        reply = orjson.loads(lines[0])
        assert isinstance(reply, dict), reply
        assert isinstance(reply.get("ok"), bool), reply
    elif not (isinstance(verb, str) and verb in MAY_WAIT):
        pytest.fail(f"no reply to {line[:300]!r}")
    alive(daemon)


@fuzz_settings(100)
@given(st.data())
def test_truncated_requests_then_a_close_harm_nothing(daemon: DaemonProcess, data: st.DataObject) -> None:
    full = orjson.dumps({"id": 1, "verb": data.draw(st.sampled_from(VERB_NAMES)),
                         "args": {"name": "counter", "body": {"add": 1}}})
    cut = data.draw(st.integers(0, len(full) - 1))
    assert exchange(daemon, full[:cut], timeout=0.5, close_write=data.draw(st.booleans())) == []
    alive(daemon)


@fuzz_settings(30)
@given(st.integers(1, 100_000), st.sampled_from(["list", "object"]))
def test_deeply_nested_json_is_refused_or_taken(daemon: DaemonProcess, depth: int, kind: str) -> None:
    body = nested(depth, kind)
    line = b'{"id": 3, "verb": "send", "args": {"name": "counter", "body": ' + body + b"}}\n"
    lines = exchange(daemon, line, timeout=10)
    assert len(lines) == 1
    reply = orjson.loads(lines[0])
    assert reply["id"] in (3, None)
    alive(daemon)


def test_oversized_lines_are_refused_and_the_connection_stays_usable(daemon: DaemonProcess) -> None:
    for size in (MAX_LINE - 1, MAX_LINE, MAX_LINE + 1, 4 * MAX_LINE):
        pad = b"x" * size
        lines = exchange(daemon, b'{"id": 9, "verb": "status", "args": {"p": "' + pad + b'"}}\n'
                         + b'{"id": 10, "verb": "pid"}\n', timeout=20)
        assert len(lines) == 2, lines
        assert error_reply(lines[0])["error"]["code"] == "too_large"
        assert orjson.loads(lines[1])["ok"] is True
    # A line that never ends, bigger than the limit, then a close: refused once, nothing kept.
    assert len(exchange(daemon, b"y" * (3 * MAX_LINE), timeout=10, close_write=True)) <= 1
    alive(daemon)


@pytest.mark.timeout(60)
def test_slowloris_clients_stall_only_themselves(daemon: DaemonProcess) -> None:
    """Hundreds of connections, each with half a request and then silence: others are still answered at once."""
    socks = []
    try:
        for _ in range(300):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(daemon.socket_path)
            sock.sendall(b'{"id": 1, "verb": "sta')
            socks.append(sock)
        for _ in range(20):
            alive(daemon)
        for sock in socks[:50]:  # a byte at a time, still no newline
            sock.sendall(b"t")
        alive(daemon)
    finally:
        for sock in socks:
            sock.close()
    alive(daemon)
