"""The control server's reply path in-process, on a real loop and socket: what the socket cannot take at once."""

from __future__ import annotations

import socket
from pathlib import Path

import orjson

from daemon.control.server import ControlServer
from daemon.shell.loop import EventLoop
from ipc.control import encode


def test_replies_larger_than_the_socket_takes_arrive_whole_and_in_order(tmp_path: Path) -> None:
    """The first reply goes to the socket directly and only part of it fits; the rest, and the reply behind it,
    wait in the connection's buffer until the client reads."""
    big = "x" * 600_000  # well over a Unix socket's send buffer (~200 KB)
    loop = EventLoop()
    server = ControlServer(tmp_path, {"status": lambda req, peer, reply: reply({"n": req.id, "big": big})}, loop)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(str(server.path))
        client.sendall(encode({"id": 1, "verb": "status"}) + encode({"id": 2, "verb": "status"}))
        client.setblocking(False)
        received = bytearray()
        turns = 0
        while received.count(b"\n") < 2:
            loop.call_soon(lambda: None)  # a turn that does not wait: the test reads between turns
            loop.run_once()
            try:
                received += client.recv(1 << 20)
            except BlockingIOError:
                pass
            turns += 1
            assert turns < 100_000, f"replies stalled after {len(received)} bytes"
    finally:
        client.close()
        server.close()
        loop.close()
    first, second, rest = bytes(received).split(b"\n")
    assert rest == b""
    assert [orjson.loads(line)["result"]["n"] for line in (first, second)] == [1, 2]
    assert orjson.loads(first)["result"]["big"] == big
    assert orjson.loads(second)["result"]["big"] == big
