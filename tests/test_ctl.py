"""foundationctl without a daemon: rendering, usage errors, exit codes, and the wire against a fake server.

The fake server is a real Unix socket served by a thread for exactly one connection: it records what the
CLI sent and answers with a canned reply line, so the tests cover the client's framing and error mapping
end to end without depending on the daemon.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemon.control.cli import format_duration, main, render_status
from ipc.control import SOCKET_NAME

NESTED_STATUS: dict[str, Any] = {
    "daemon": {"pid": 1234, "version": "0.1.0", "uptime_s": 192.4},
    "tree": {
        "name": "root",
        "type": "supervisor",
        "strategy": "one_for_one",
        "intensity": 3,
        "period": 5.0,
        "state": "running",
        "restarts": 0,
        "children": [
            {
                "name": "ticker",
                "type": "worker",
                "pid": 4242,
                "state": "running",
                "restart": "permanent",
                "restarts": 0,
                "uptime_s": 192.0,
                "command": ["python3", "-u", "ticker.py"],
            },
            {
                "name": "pipeline",
                "type": "supervisor",
                "strategy": "rest_for_one",
                "intensity": 1,
                "period": 10.0,
                "state": "running",
                "restarts": 2,
                "children": [
                    {
                        "name": "stage1",
                        "type": "worker",
                        "pid": 4260,
                        "state": "running",
                        "restart": "transient",
                        "restarts": 1,
                        "uptime_s": 12.0,
                        "agent": "agents.examples.counter:Counter",
                    },
                    {
                        "name": "stage2",
                        "type": "worker",
                        "pid": None,
                        "state": "stopped",
                        "restart": "temporary",
                        "restarts": 0,
                        "uptime_s": None,
                        "command": ["stage2"],
                    },
                ],
            },
            {
                "name": "last",
                "type": "worker",
                "pid": 4270,
                "state": "starting",
                "restart": "permanent",
                "restarts": 0,
                "uptime_s": 0.2,
                "command": ["last"],
            },
        ],
    },
}


# ---------------------------------------------------------------------------------------------------------
# render_status


def _line(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if f" {name} " in f" {line} ")


def test_render_status_shows_the_daemon_and_every_node() -> None:
    text = render_status(NESTED_STATUS)
    lines = text.splitlines()
    assert lines[0] == "foundationd pid 1234, version 0.1.0, up 3m12s"
    assert lines[1].startswith("root ")
    assert "one_for_one" in lines[1]
    assert "restarts 0 (3 in 5s)" in lines[1]
    assert len(lines) == 7  # header + root + ticker, pipeline, stage1, stage2, last

    ticker = _line(text, "ticker")
    assert ticker.startswith("├─ ticker")
    assert "pid 4242" in ticker
    assert "running" in ticker
    assert "up 3m12s" in ticker
    assert "permanent" in ticker
    assert "python3 -u ticker.py" in ticker

    pipeline = _line(text, "pipeline")
    assert pipeline.startswith("├─ pipeline")
    assert "rest_for_one" in pipeline
    assert "restarts 2 (1 in 10s)" in pipeline

    # Children of a supervisor that is not the last child hang off a continuing vertical bar.
    assert _line(text, "stage1").startswith("│  ├─ stage1")
    assert "agent agents.examples.counter:Counter" in _line(text, "stage1")
    stage2 = _line(text, "stage2")
    assert stage2.startswith("│  └─ stage2")
    assert "stopped" in stage2
    assert "pid -" in stage2
    assert "up -" in stage2

    last = _line(text, "last")
    assert last.startswith("└─ last")
    assert "starting" in last


def test_render_status_aligns_worker_columns() -> None:
    text = render_status(NESTED_STATUS)
    workers = [_line(text, name) for name in ("ticker", "stage1", "stage2", "last")]
    assert len({line.index("pid ") for line in workers}) == 1
    assert len({line.index("restarts ") for line in workers}) == 1
    assert all(line == line.rstrip() for line in text.splitlines())


def test_render_status_shows_what_a_notify_child_reported() -> None:
    tree = {"name": "root", "type": "supervisor", "children": [
        {"name": "svc", "type": "worker", "state": "running", "command": ["svc"], "status": "serving 3 clients"},
        {"name": "gone", "type": "worker", "state": "failed", "command": ["x"], "errno": 2, "exit_status": 3},
        {"name": "plain", "type": "worker", "state": "running", "command": ["sleep", "1"]},
    ]}
    lines = render_status({"daemon": {"pid": 1}, "tree": tree}).splitlines()
    assert lines[2].endswith('svc  "serving 3 clients"')
    assert lines[3].endswith("x  errno 2, exit_status 3")
    assert lines[4].endswith("sleep 1")


def test_render_status_says_how_commands_are_spawned() -> None:
    daemon = {"pid": 1, "version": "0.1.0", "uptime_s": 5, "spawn": "foundation-exec",
              "zygote": {"state": "ready", "pid": 7, "spares": [8]}}
    assert render_status({"daemon": daemon}).splitlines()[0] == (
        "foundationd pid 1, version 0.1.0, up 5s, spawn foundation-exec; zygote ready (pid 7, 1 spare)")


def test_render_status_says_how_the_zygote_is() -> None:
    daemon = {"pid": 1, "version": "0.1.0", "uptime_s": 5, "zygote": {"state": "ready", "pid": 7, "spares": [8, 9]}}
    assert render_status({"daemon": daemon}).splitlines()[0].endswith("; zygote ready (pid 7, 2 spares)")
    for off in ({"state": "off", "pid": None, "spares": []}, {"state": "disabled"}, None):
        assert "zygote" not in render_status({"daemon": {**daemon, "zygote": off}})


def test_render_status_tolerates_missing_fields() -> None:
    text = render_status({"daemon": {"pid": 1}, "tree": {"name": "root", "type": "supervisor"}})
    assert text.splitlines()[0] == "foundationd pid 1, version -, up -"
    assert text.splitlines()[1].startswith("root")
    assert render_status({}).splitlines() == ["foundationd pid -, version -, up -"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0.4, "0s"),
        (59.9, "59s"),
        (60, "1m00s"),
        (192, "3m12s"),
        (3725, "1h02m"),
        (90000, "1d01h"),
    ],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


# ---------------------------------------------------------------------------------------------------------
# Usage errors: exit 2, before any connection is tried (the runtime dir has no socket, which would be exit 3)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["start"],
        ["detach", "a", "b"],
        ["status", "--bogus"],
        ["attach", "worker"],
        ["attach", "worker", "--"],
        ["attach", "worker", "--agent", "mod:Cls", "--", "sleep", "1"],
        ["attach", "worker", "--restart", "sometimes", "--", "sleep", "1"],
        ["attach", "worker", "sleep", "1"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--runtime-dir", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert "usage: foundationctl" in err
    assert "cannot reach" not in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "attach" in capsys.readouterr().out
    assert main(["attach", "--help"]) == 0
    assert "--agent MODULE:CLASS" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------
# Unreachable daemon: exit 3


def test_unreachable_daemon_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--runtime-dir", str(tmp_path), "status"]) == 3
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == (
        f"error: cannot reach foundationd at {tmp_path / SOCKET_NAME}: No such file or directory"
    )


def test_runtime_dir_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FOUNDATION_RUNTIME_DIR", str(tmp_path))
    assert main(["stop", "ticker"]) == 3
    assert f"at {tmp_path / SOCKET_NAME}:" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# A fake daemon: one connection, one request, one canned reply


class FakeDaemon:
    """Serves one connection on ``<dir>/control.sock`` from a thread and records the request it got.

    The socket listens before the thread starts, so the client's connect cannot race the server.
    ``reply`` is a dict sent as one JSON line with the request's id, or ``None`` to hang up instead.
    """

    def __init__(self, runtime_dir: Path, reply: dict[str, Any] | None) -> None:
        self.path = runtime_dir / SOCKET_NAME
        self.reply = reply
        self.requests: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(self.path))
        self._sock.listen(1)
        self._sock.settimeout(10.0)  # a client that never connects fails the test instead of hanging it
        self._thread = threading.Thread(target=self._serve, name="fake-foundationd")
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self._sock.accept()
            with conn:
                conn.settimeout(10.0)
                buf = b""
                while b"\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                request = orjson.loads(buf.partition(b"\n")[0])
                self.requests.append(request)
                if self.reply is not None:
                    conn.sendall(orjson.dumps({"id": request.get("id"), **self.reply}) + b"\n")
        except BaseException as exc:  # surfaced by close() in the test's thread
            self.error = exc

    def close(self) -> None:
        self._thread.join(timeout=15.0)
        self._sock.close()
        assert not self._thread.is_alive(), "fake daemon thread did not finish"
        if self.error is not None:
            raise self.error

    @property
    def request(self) -> dict[str, Any]:
        assert len(self.requests) == 1
        return self.requests[0]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """``serve(reply)`` starts a FakeDaemon in tmp_path; every one started is joined and closed afterwards."""
    daemons: list[FakeDaemon] = []

    def start(reply: dict[str, Any] | None) -> FakeDaemon:
        daemon = FakeDaemon(tmp_path, reply)
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        daemon.close()


def _ok(result: Any) -> dict[str, Any]:
    return {"ok": True, "result": result}


def test_daemon_error_exits_1(tmp_path: Path, serve: Any, capsys: pytest.CaptureFixture[str]) -> None:
    fake = serve({"ok": False, "error": {"code": "no_such_child", "message": "no child named 'ghost'"}})
    assert main(["--runtime-dir", str(tmp_path), "restart", "ghost"]) == 1
    fake.close()
    assert fake.request["verb"] == "restart"
    assert fake.request["args"] == {"name": "ghost"}
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == "error: no_such_child: no child named 'ghost'"


def test_status_json_prints_the_result(
    tmp_path: Path, serve: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = serve(_ok(NESTED_STATUS))
    assert main(["--runtime-dir", str(tmp_path), "status", "--json"]) == 0
    fake.close()
    assert fake.request["verb"] == "status"
    assert fake.request["args"] == {}
    assert json.loads(capsys.readouterr().out) == NESTED_STATUS


def test_status_prints_the_tree(tmp_path: Path, serve: Any, capsys: pytest.CaptureFixture[str]) -> None:
    serve(_ok(NESTED_STATUS))
    assert main(["--runtime-dir", str(tmp_path), "status"]) == 0
    assert capsys.readouterr().out == render_status(NESTED_STATUS) + "\n"


@pytest.mark.parametrize(
    ("argv", "result", "printed"),
    [
        (
            ["start", "ticker"],
            {"name": "ticker", "state": "running", "pid": 4301},
            "started ticker (pid 4301)",
        ),
        (["stop", "ticker"], {"name": "ticker", "state": "stopped", "pid": None}, "stopped ticker"),
        (
            ["restart", "ticker"],
            {"name": "ticker", "state": "running", "pid": 4301},
            "restarted ticker (pid 4301)",
        ),
        (
            ["restart", "ticker"],
            {"name": "ticker", "state": "failed", "pid": None},
            "restarted ticker (state failed)",
        ),
        (["detach", "ticker"], {"name": "ticker"}, "detached ticker"),
        (["shutdown"], {"stopping": True}, "foundationd is shutting down"),
    ],
)
def test_mutating_verbs_confirm_in_one_line(
    argv: list[str],
    result: dict[str, Any],
    printed: str,
    *,
    tmp_path: Path,
    serve: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = serve(_ok(result))
    assert main(["--runtime-dir", str(tmp_path), *argv]) == 0
    fake.close()
    assert fake.request["verb"] == argv[0]
    assert capsys.readouterr().out == printed + "\n"


def test_attach_sends_the_command_verbatim(
    tmp_path: Path, serve: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = serve(_ok({"name": "w"}))
    argv = ["attach", "w", "--parent", "pipeline", "--restart", "transient"]
    argv += ["--", "python3", "-u", "w.py", "--agent", "x", "--"]
    assert main(["--runtime-dir", str(tmp_path), *argv]) == 0
    fake.close()
    assert fake.request["verb"] == "attach"
    assert fake.request["args"] == {
        "parent": "pipeline",
        "spec": {
            "name": "w",
            "command": ["python3", "-u", "w.py", "--agent", "x", "--"],
            "restart": "transient",
        },
    }
    assert capsys.readouterr().out == "attached w to pipeline\n"


def test_attach_agent_defaults_to_root(tmp_path: Path, serve: Any) -> None:
    fake = serve(_ok({"name": "counter"}))
    assert (
        main(
            [
                "--runtime-dir",
                str(tmp_path),
                "attach",
                "counter",
                "--agent",
                "agents.examples.counter:Counter",
            ]
        )
        == 0
    )
    fake.close()
    assert fake.request["args"] == {
        "parent": "root",
        "spec": {"name": "counter", "agent": "agents.examples.counter:Counter"},
    }


def test_hang_up_without_reply_exits_3(
    tmp_path: Path, serve: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = serve(None)
    assert main(["--runtime-dir", str(tmp_path), "status"]) == 3
    fake.close()
    assert "daemon closed the connection" in capsys.readouterr().err


def test_render_status_shows_usage_the_last_exit_and_a_readable_command() -> None:
    tree = {"name": "root", "type": "supervisor", "children": [
        {"name": "web", "type": "worker", "state": "running", "pid": 10, "command": ["/opt/venv/bin/python3", "-m",
                                                                                     "web"]},
        {"name": "gone", "type": "worker", "state": "failed", "pid": None, "command": ["x"],
         "last_exit": "exited with status 3", "last_exit_ago_s": 192.4},
    ]}
    seen = []

    def usage(pid: int, daemon_pid: int) -> tuple[float, int] | None:
        seen.append((pid, daemon_pid))
        return (1.25, 12 << 20)

    lines = render_status({"daemon": {"pid": 1}, "tree": tree}, usage=usage).splitlines()
    assert seen == [(10, 1)]
    assert "cpu 1.2s  rss 12.0M  python3 -m web" in lines[2]
    assert re.search(r"cpu -\s+rss -\s+x  last: exited with status 3 \(3m12s ago\)$", lines[3])
    assert "cpu" not in render_status({"daemon": {"pid": 1}, "tree": tree}, usage=lambda p, d: None)
