"""Issue 11 defect 5: an oversized request gets `too_large` at once (exit 1), from the client's own check and from
the daemon, whose error now carries the request's id so a pipelining client can match it."""

from __future__ import annotations

import orjson
import pytest
from helpers import ctl

from agents.testing import DaemonProcess
from ipc.control import MAX_LINE, ControlClient
from ipc.errors import ErrorCode, FoundationError

COUNTER = """
[[supervisor.children]]
name = "counter"
agent = "agents.examples.counter:Counter"
"""


@pytest.mark.timeout(20)
def test_send_of_an_oversized_line_fails_at_once_and_the_rest_goes_through(start_daemon) -> None:
    d: DaemonProcess = start_daemon(COUNTER)
    d.wait_running("counter")
    big = orjson.dumps({"add": 1, "pad": "x" * (1 << 20)}).decode()
    out = ctl(d, "send", "counter", "-", stdin=f'{{"add": 1}}\n{big}\n{{"add": 2}}\n', timeout=15)
    assert out.returncode == 1
    assert "error: too_large: line 2:" in out.stderr
    assert len(out.stdout.split()) == 2  # the two small messages were accepted
    assert d.request("call", name="counter", body={"get": True})["reply"] == {"count": 3}
    with ControlClient(d.socket_path, timeout=10) as client, pytest.raises(FoundationError) as exc:
        client.request("send", name="counter", body=orjson.loads(big))  # (too long for a command-line argument)
    assert exc.value.code is ErrorCode.TOO_LARGE


@pytest.mark.timeout(20)
def test_the_daemon_echoes_the_id_of_a_line_too_long_to_parse(start_daemon) -> None:
    d: DaemonProcess = start_daemon(COUNTER)
    line = b'{"id": 41, "verb": "status", "args": {"pad": "' + b"x" * MAX_LINE + b'"}}\n'
    with ControlClient(d.socket_path, timeout=10) as client:
        reply = client.raw(line)
        assert reply["id"] == 41
        assert FoundationError.from_wire(reply["error"]).code is ErrorCode.TOO_LARGE
        assert client.request("status")["tree"]["name"] == "root"  # the connection is still usable
