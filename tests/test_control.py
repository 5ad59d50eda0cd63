"""The control socket of a real foundationd: attach/detach at run time, and everything a client can get wrong.

Whatever a client sends, it gets one structured reply (docs/protocol.md sections 2, 3 and 6) and the daemon keeps
serving it and everyone else.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import orjson
import psutil
import pytest
from helpers import SLEEP, children_of

from agents.testing import DaemonProcess, exited, wait_for
from ipc.control import MAX_LINE, ControlClient
from ipc.errors import ErrorCode, FoundationError

CONFIG = f"""
    [[supervisor.children]]
    name = "a"
    command = {SLEEP}
    [[supervisor.children]]
    name = "inner"
    [[supervisor.children.children]]
    name = "x"
    command = {SLEEP}
"""


def error_code(client: ControlClient, verb: str, **args: object) -> ErrorCode:
    with pytest.raises(FoundationError) as info:
        client.request(verb, **args)
    return info.value.code


def assert_serving(daemon: DaemonProcess, client: ControlClient | None = None) -> None:
    """The daemon answers on `client`'s connection (if given) and on a new one."""
    if client is not None:
        assert client.request("status")["tree"]["name"] == "root"
    assert daemon.status()["tree"]["name"] == "root"


class Wire:
    """A raw connection: send bytes without waiting, read reply lines one at a time."""

    def __init__(self, daemon: DaemonProcess, timeout: float = 20) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(daemon.socket_path)
        self.reader = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> dict:
        line = self.reader.readline()
        assert line.endswith(b"\n"), line
        return orjson.loads(line)

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def daemon(start_daemon) -> DaemonProcess:
    started = start_daemon(CONFIG)
    started.wait_running("x")
    return started


# ---- attach / detach ----


def test_attach_and_detach_via_control_client(daemon: DaemonProcess) -> None:
    with daemon.client() as client:
        result = client.request("attach", spec={"name": "extra", "command": ["sleep", "1000"]})
        assert result["name"] == "extra"
        assert result["state"] == "running"
        pid = result["pid"]
        # "running" means spawned: setpriv may still be about to exec the command.
        wait_for(lambda: [os.path.basename(a) for a in psutil.Process(pid).cmdline()] == ["sleep", "1000"],
                 what="the attached command runs")
        assert children_of(daemon, "root") == ["a", "inner", "extra"]
        assert daemon.node("extra")["pid"] == pid

        nested = client.request("attach", parent="inner", spec={"name": "y", "command": ["sleep", "1000"],
                                                                 "restart": "transient"})
        assert nested["state"] == "running"
        assert children_of(daemon, "inner") == ["x", "y"]
        assert daemon.node("y")["restart"] == "transient"

        # An attached child is supervised like any other.
        os.kill(pid, 9)
        daemon.wait_running("extra", not_pid=pid)
        pid = daemon.pid("extra")

        assert client.request("detach", name="extra")["name"] == "extra"
        assert exited(pid)
        assert children_of(daemon, "root") == ["a", "inner"]
        assert error_code(client, "stop", name="extra") is ErrorCode.NO_SUCH_CHILD
        client.request("detach", name="y")
        assert children_of(daemon, "inner") == ["x"]
        # The name is free again.
        again = client.request("attach", spec={"name": "extra", "command": ["sleep", "1000"]})
        assert again["state"] == "running"
        assert again["pid"] != pid


def test_attach_duplicate_name_is_already_exists(daemon: DaemonProcess) -> None:
    before = daemon.status()["tree"]
    with daemon.client() as client:
        for name in ("a", "x", "inner"):
            assert error_code(client, "attach", spec={"name": name, "command": ["sleep", "1000"]}) \
                is ErrorCode.ALREADY_EXISTS
        # A nested spec whose inner name clashes is refused as a whole.
        spec = {"name": "sup2", "children": [{"name": "x", "command": ["sleep", "1000"]}]}
        assert error_code(client, "attach", spec=spec) is ErrorCode.ALREADY_EXISTS
    after = daemon.status()["tree"]
    assert [c["name"] for c in after["children"]] == ["a", "inner"]
    assert daemon.node("a")["pid"] == next(c for c in before["children"] if c["name"] == "a")["pid"]


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ({"parent": "nobody", "spec": {"name": "n", "command": ["sleep", "1"]}}, ErrorCode.NO_SUCH_CHILD),
        ({"parent": "a", "spec": {"name": "n", "command": ["sleep", "1"]}}, ErrorCode.NOT_A_SUPERVISOR),
        ({"parent": 3, "spec": {"name": "n", "command": ["sleep", "1"]}}, ErrorCode.BAD_REQUEST),
        ({"spec": {"name": "n"}}, ErrorCode.INVALID_SPEC),
        ({"spec": {"name": "n", "command": []}}, ErrorCode.INVALID_SPEC),
        ({"spec": {"name": "n", "command": ["sleep"], "restart": "sometimes"}}, ErrorCode.INVALID_SPEC),
        ({"spec": {"name": "bad name", "command": ["sleep"]}}, ErrorCode.INVALID_SPEC),
        ({"spec": "sleep 1000"}, ErrorCode.INVALID_SPEC),
        ({}, ErrorCode.INVALID_SPEC),
    ],
    ids=["no_parent", "worker_parent", "parent_type", "no_command", "empty_command", "bad_restart", "bad_name",
         "spec_not_object", "no_spec"],
)
def test_attach_errors(daemon: DaemonProcess, args: dict, code: ErrorCode) -> None:
    with daemon.client() as client:
        assert error_code(client, "attach", **args) is code
        assert_serving(daemon, client)
    assert children_of(daemon, "root") == ["a", "inner"]


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "n", "command": ["/nonexistent/program"]},
        {"name": "n", "command": ["no-such-command-on-path"]},
        {"name": "n", "command": ["sleep", "1000"], "working_dir": "/nonexistent/dir"},
    ],
    ids=["missing_path", "not_on_path", "missing_working_dir"],
)
def test_attach_of_an_unstartable_child_fails_without_harming_the_daemon(
    daemon: DaemonProcess, spec: dict
) -> None:
    a = daemon.pid("a")
    with daemon.client() as client:
        assert error_code(client, "attach", spec=spec) is ErrorCode.SPAWN_FAILED
        assert_serving(daemon, client)
    assert children_of(daemon, "root") == ["a", "inner"]
    assert daemon.pid("a") == a
    assert daemon.status()["tree"]["restarts"] == 0


def test_start_of_a_child_whose_program_vanished_fails_without_harming_the_daemon(
    start_daemon, tmp_path: Path
) -> None:
    program = tmp_path / "worker.sh"
    program.write_text("#!/bin/sh\nexec sleep 1000\n")
    program.chmod(0o755)
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "keeper"
        command = {SLEEP}
        [[supervisor.children]]
        name = "w"
        command = [{json.dumps(str(program))}]
    """)
    keeper = daemon.wait_running("keeper")
    daemon.wait_running("w")
    with daemon.client() as client:
        client.request("stop", name="w")
        program.unlink()
        assert error_code(client, "start", name="w") is ErrorCode.SPAWN_FAILED
        assert error_code(client, "restart", name="w") is ErrorCode.SPAWN_FAILED
        assert_serving(daemon, client)
        assert daemon.node("w")["state"] == "stopped"
        assert daemon.pid("keeper") == keeper
        program.write_text("#!/bin/sh\nexec sleep 1000\n")
        program.chmod(0o755)
        assert client.request("start", name="w")["state"] == "running"


# ---- start / stop / restart by name ----


@pytest.mark.parametrize("verb", ["start", "stop", "restart", "detach"])
def test_unknown_name_is_no_such_child(daemon: DaemonProcess, verb: str) -> None:
    with daemon.client() as client:
        assert error_code(client, verb, name="ghost") is ErrorCode.NO_SUCH_CHILD
        assert_serving(daemon, client)


@pytest.mark.parametrize("args", [{}, {"name": ""}, {"name": 7}, {"name": None}])
def test_missing_or_mistyped_name_is_bad_request(daemon: DaemonProcess, args: dict) -> None:
    with daemon.client() as client:
        for verb in ("start", "stop", "restart", "detach"):
            assert error_code(client, verb, **args) is ErrorCode.BAD_REQUEST
        assert_serving(daemon, client)


def test_stop_start_restart_by_name(daemon: DaemonProcess) -> None:
    with daemon.client() as client:
        first = daemon.pid("x")
        assert client.request("stop", name="x") == {"name": "x", "state": "stopped", "pid": None}
        assert exited(first)
        assert client.request("stop", name="x")["state"] == "stopped"  # idempotent
        started = client.request("start", name="x")
        assert started["state"] == "running"
        assert started["pid"] not in (None, first)
        assert client.request("start", name="x") == {**started, "already": True}  # running: nothing happens
        restarted = client.request("restart", name="x")
        assert restarted["state"] == "running"
        assert restarted["pid"] != started["pid"]
        assert exited(started["pid"])
        # A stopped supervisor takes its children down, and brings them back on start.
        assert client.request("stop", name="inner")["state"] == "stopped"
        assert daemon.node("x")["state"] == "stopped"
        assert client.request("start", name="inner")["state"] == "running"
        assert daemon.node("x")["state"] == "running"
        assert error_code(client, "stop", name="root") is ErrorCode.BAD_REQUEST


def test_requests_for_children_of_a_stopped_supervisor_answer_at_once(daemon: DaemonProcess) -> None:
    # The stopped supervisor starts nothing until it is started itself: the verbs must not wait for it.
    with daemon.client(timeout=5) as client:
        client.request("stop", name="inner")
        attached = client.request("attach", parent="inner", spec={"name": "y", "command": ["sleep", "1000"]})
        assert attached == {"name": "y", "state": "stopped", "pid": None}
        assert client.request("start", name="x") == {"name": "x", "state": "stopped", "pid": None}
        assert client.request("restart", name="y")["state"] == "stopped"
        assert children_of(daemon, "inner") == ["x", "y"]
        assert client.request("start", name="inner")["state"] == "running"
        assert daemon.wait_running("x") != daemon.wait_running("y")
        client.request("stop", name="inner")
        assert client.request("detach", name="y") == {"name": "y", "state": "stopped", "pid": None}
        assert children_of(daemon, "inner") == ["x"]


# ---- malformed requests ----


BAD_LINES = {
    "not_json": (b"this is not json\n", ErrorCode.BAD_REQUEST),
    "truncated_json": (b'{"verb": "status"\n', ErrorCode.BAD_REQUEST),
    "not_utf8": (b'{"verb": "\xff\xfe"}\n', ErrorCode.BAD_REQUEST),
    "array": (b'["status"]\n', ErrorCode.BAD_REQUEST),
    "number": (b"42\n", ErrorCode.BAD_REQUEST),
    "missing_verb": (b'{"id": 5, "args": {}}\n', ErrorCode.BAD_REQUEST),
    "empty_verb": (b'{"id": 5, "verb": ""}\n', ErrorCode.BAD_REQUEST),
    "verb_not_string": (b'{"id": 5, "verb": ["status"]}\n', ErrorCode.BAD_REQUEST),
    "args_not_object": (b'{"id": 5, "verb": "status", "args": [1]}\n', ErrorCode.BAD_REQUEST),
    "unknown_verb": (b'{"id": 5, "verb": "explode"}\n', ErrorCode.UNKNOWN_VERB),
}


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_bad_request_gets_a_structured_error_and_the_connection_survives(daemon: DaemonProcess, case: str) -> None:
    line, code = BAD_LINES[case]
    with daemon.client(timeout=10) as client:
        reply = client.raw(line)
        assert reply["ok"] is False
        assert reply["error"]["code"] == code
        assert isinstance(reply["error"]["message"], str)
        assert reply["error"]["message"]
        assert_serving(daemon, client)


def test_all_bad_requests_on_one_connection(daemon: DaemonProcess) -> None:
    with daemon.client(timeout=10) as client:
        for line, code in BAD_LINES.values():
            assert client.raw(line)["error"]["code"] == code
        assert_serving(daemon, client)


def test_oversized_line_is_too_large_and_the_connection_survives(daemon: DaemonProcess) -> None:
    with daemon.client(timeout=20) as client:
        big = b'{"verb": "status", "args": {"pad": "' + b"x" * (MAX_LINE + 10) + b'"}}\n'
        reply = client.raw(big)
        assert reply["id"] is None
        assert reply["ok"] is False
        assert reply["error"]["code"] == ErrorCode.TOO_LARGE
        assert_serving(daemon, client)


def test_oversized_line_in_pieces_is_skipped_up_to_its_newline(daemon: DaemonProcess) -> None:
    with Wire(daemon) as wire:
        wire.send(b"y" * (MAX_LINE // 2))
        wire.send(b"y" * (MAX_LINE // 2 + 5))
        wire.send(b"yyy" * 1000)
        wire.send(b"yyy\n" + json.dumps({"id": 9, "verb": "status"}).encode() + b"\n")
        assert wire.reply()["error"]["code"] == ErrorCode.TOO_LARGE
        follow = wire.reply()  # the request behind the skipped line is answered
        assert follow["id"] == 9
        assert follow["ok"] is True
    assert_serving(daemon)


def test_line_at_the_limit_is_accepted(daemon: DaemonProcess) -> None:
    head, tail = b'{"verb": "status", "args": {"pad": "', b'"}}'
    line = head + b"x" * (MAX_LINE - 1 - len(head) - len(tail)) + tail + b"\n"
    assert len(line) == MAX_LINE
    with daemon.client(timeout=20) as client:
        reply = client.raw(line)
        assert reply["ok"] is True, reply.get("error")


def test_request_split_across_writes_and_pipelined_requests(daemon: DaemonProcess) -> None:
    with Wire(daemon) as wire:
        wire.send(b'{"id": 1, "ve')
        wire.send(b'rb": "status"}\n\n{"id": 2, "verb": "nope"}\n{"id": 3, "verb": "status"}\n')
        replies = [wire.reply() for _ in range(3)]
    assert [r["id"] for r in replies] == [1, 2, 3]
    assert [r["ok"] for r in replies] == [True, False, True]
    assert replies[1]["error"]["code"] == ErrorCode.UNKNOWN_VERB


def test_clients_that_disconnect_mid_line_break_nothing(daemon: DaemonProcess) -> None:
    pids = {name: daemon.pid(name) for name in ("a", "x")}
    for partial in (b"", b'{"verb": "sta', b"x" * 200_000, b'{"verb": "stop", "args": {"name": "a"}}'):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(daemon.socket_path)
            if partial:
                sock.sendall(partial)
    # A client that sends a slow request and leaves before the reply.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(daemon.socket_path)
        sock.sendall(b'{"verb": "restart", "args": {"name": "x"}}\n')
    new_x = daemon.wait_running("x", not_pid=pids["x"])
    assert daemon.pid("a") == pids["a"]  # the unterminated stop was never carried out
    assert_serving(daemon)
    with daemon.client() as client:
        assert client.request("restart", name="x")["pid"] != new_x


def test_many_connections_at_once(daemon: DaemonProcess) -> None:
    wires = [Wire(daemon) for _ in range(50)]
    try:
        for i, wire in enumerate(wires):
            wire.send(json.dumps({"id": i, "verb": "status"}).encode() + b"\n")  # all in flight before any read
        for i, wire in enumerate(wires):
            reply = wire.reply()
            assert reply["id"] == i
            assert reply["ok"] is True
    finally:
        for wire in wires:
            wire.close()
    assert_serving(daemon)


def test_daemon_status_keys(daemon: DaemonProcess) -> None:
    status = daemon.status()
    assert status["daemon"]["pid"] == daemon.proc.pid  # type: ignore[union-attr]
    assert status["daemon"]["runtime_dir"] == str(daemon.runtime_dir)
    wait_for(lambda: daemon.status()["daemon"]["uptime_s"] > status["daemon"]["uptime_s"], what="uptime grows")


def test_line_one_byte_over_the_limit_is_too_large(daemon: DaemonProcess) -> None:
    head, tail = b'{"verb": "status", "args": {"pad": "', b'"}}'
    line = head + b"x" * (MAX_LINE - len(head) - len(tail)) + tail + b"\n"
    assert len(line) == MAX_LINE + 1
    with daemon.client(timeout=20) as client:
        assert client.raw(line)["error"]["code"] == ErrorCode.TOO_LARGE
