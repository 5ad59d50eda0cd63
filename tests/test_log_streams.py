"""stdout and stderr told apart: each child has two pipes, and every line keeps the stream it came from, in
``foundationctl logs`` (``--stream``, the ``!`` mark, ``"stream"`` in ``--json``) and on foundationd's stdout."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
from pathlib import Path

import pytest
from helpers import FOUNDATIONCTL, REPO, ctl, ctl_env

from agents.testing import DaemonProcess, wait_for
from ipc.errors import FoundationError

TALK = "echo to out; echo to err >&2; trap 'echo hup-out; echo hup-err >&2' HUP; while :; do sleep 1 & wait; done"
BOTH = f"""
    [[supervisor.children]]
    name = "both"
    command = ["sh", "-c", {json.dumps(TALK)}]
    [[supervisor.children]]
    name = "quiet"
    command = ["sh", "-c", "echo quiet out; exec sleep 1000"]
"""


def test_logs_mark_stderr_lines_and_keep_one_stream_on_request(start_daemon) -> None:
    d: DaemonProcess = start_daemon(BOTH)
    pid = d.wait_running("both")
    wait_for(lambda: {"to out", "! to err"} <= set(ctl(d, "logs", "both").stdout.splitlines()), what="both lines")
    lines = ctl(d, "logs", "both").stdout.splitlines()
    assert lines[0] == f"-- started (pid {pid})"
    assert ctl(d, "logs", "both", "--stream", "stderr").stdout.splitlines() == [f"-- started (pid {pid})", "! to err"]
    assert ctl(d, "logs", "both", "--stream", "stdout").stdout.splitlines() == [f"-- started (pid {pid})", "to out"]
    stamped = ctl(d, "logs", "both", "--stream", "stderr", "--timestamps").stdout.splitlines()
    assert stamped[1].endswith(" ! to err")
    assert stamped[1][:4].isdigit()
    assert ctl(d, "logs", "both", "--stream", "stderr", "-n", "1").stdout.splitlines() == ["! to err"]

    entries = json.loads(ctl(d, "logs", "both", "--json").stdout)["lines"]
    assert [(e["stream"], e["line"]) for e in entries if e["stream"] != "daemon"] in (
        [("stdout", "to out"), ("stderr", "to err")], [("stderr", "to err"), ("stdout", "to out")])
    assert entries[0]["stream"] == "daemon"

    bad = ctl(d, "logs", "both", "--stream", "stdin")
    assert bad.returncode == 2
    assert "invalid choice: 'stdin'" in bad.stderr
    with d.client() as client, pytest.raises(FoundationError, match="'stream' must be one of stdout, stderr"):
        client.request("logs", name="both", stream="stdin")


def test_the_merged_view_and_foundationds_stdout_mark_stderr_after_the_name(start_daemon) -> None:
    d: DaemonProcess = start_daemon(BOTH)
    d.wait_running("both")
    wait_for(lambda: {"both | to out", "both ! to err", "quiet | quiet out"} <= set(ctl(d, "logs").stdout.splitlines()),
             what="the merged view")
    errors = ctl(d, "logs", "--stream", "stderr").stdout.splitlines()
    assert "both ! to err" in errors
    assert all(re.fullmatch(r"(both|quiet) (! .*|\| -- (started|exited).*)", line) for line in errors), errors
    merged = json.loads(ctl(d, "logs", "--json").stdout)["lines"]
    assert {"t", "child", "stream", "line"} <= set(merged[0])
    assert {(e["child"], e["stream"], e["line"]) for e in merged} >= {
        ("both", "stdout", "both | to out"), ("both", "stderr", "both ! to err")}
    # foundationd's own stdout (the journal under systemd) carries the same mark
    wait_for(lambda: "both ! to err" in d.log() and "both | to out" in d.log(), what="foundationd's stdout")


def follow(d: DaemonProcess, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([FOUNDATIONCTL, "--runtime-dir", str(d.runtime_dir), "logs", "--follow", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**ctl_env(), "PYTHONUNBUFFERED": "1"})


def read_until(proc: subprocess.Popen[bytes], text: str, got: bytearray, timeout: float = 15) -> str:
    """What ``proc`` printed so far, once it holds ``text`` (read as it comes, without blocking past the deadline)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()

    def holds() -> bool:
        if select.select([fd], [], [], 0.05)[0]:
            got.extend(os.read(fd, 65536))
        return text in got.decode()

    wait_for(holds, timeout=timeout, what=f"{text!r} from foundationctl logs --follow")
    return got.decode()


def test_follow_keeps_to_the_stream_asked_for(start_daemon) -> None:
    d: DaemonProcess = start_daemon(BOTH)
    d.wait_running("both")
    wait_for(lambda: "! to err" in ctl(d, "logs", "both").stdout, what="the first lines")
    proc = follow(d, "both", "--stream", "stderr", "--json", "-n", "0")
    got = bytearray()
    try:

        def hup_followed() -> bool:  # (the follower may not be registered yet: signal again until it shows)
            assert ctl(d, "signal", "both", "HUP").returncode == 0
            return "hup-err" in read_until(proc, "hup-err", got, timeout=0.5)

        wait_for(hup_followed, what="hup-err followed")
        wait_for(lambda: "hup-out" in ctl(d, "logs", "both", "--stream", "stdout").stdout, what="hup-out read")
        d.request("restart", name="both")  # markers come through the filter, after whatever came before
        read_until(proc, "-- exited", got)
    finally:
        proc.kill()
        got.extend(proc.communicate(timeout=10)[0])
    entries = [json.loads(line) for line in got.decode().splitlines()]
    assert {e["stream"] for e in entries} == {"stderr", "daemon"}, entries
    assert "hup-out" not in got.decode()
    assert any(e["line"].startswith("-- exited: ") for e in entries), entries


def test_an_agent_has_two_streams_forked_from_the_zygote_or_execd(start_daemon) -> None:
    for fork_server in (True, False):
        d: DaemonProcess = start_daemon(f"""
            [daemon]
            fork_server = {str(fork_server).lower()}
            [[supervisor.children]]
            name = "loud"
            agent = "tests.agents_for_tests:Loud"
            working_dir = "{REPO}"
        """)
        d.wait_running("loud")
        if fork_server:
            assert d.status()["daemon"]["zygote"]["spawns"] == 1
        wait_for(lambda d=d: "loud on stderr" in ctl(d, "logs", "loud").stdout, what="loud's lines")
        wait_for(lambda d=d: "loud on stdout" in ctl(d, "logs", "loud").stdout, what="loud's lines")
        entries = json.loads(ctl(d, "logs", "loud", "--json").stdout)["lines"]
        streams = {e["line"]: e["stream"] for e in entries}
        assert streams["loud on stdout"] == "stdout"
        assert streams["loud on stderr"] == "stderr"


def test_a_restarted_child_leaves_no_pipe_behind(start_daemon) -> None:
    d: DaemonProcess = start_daemon(BOTH)
    assert d.proc is not None
    fds = Path(f"/proc/{d.proc.pid}/fd")
    pipes = lambda: sum(1 for fd in fds.iterdir() if os.path.exists(fd) and "pipe:" in os.readlink(fd))  # noqa: E731
    pid = d.wait_running("both")
    with d.client() as client:
        client.request("status")
        baseline = pipes()
        for _ in range(5):
            d.request("restart", name="both")
            pid = d.wait_running("both", not_pid=pid)
        wait_for(lambda: pipes() == baseline, timeout=5, what=f"the daemon's pipes back to {baseline}")


def test_output_pipes_close_the_write_ends_always_and_the_read_ends_on_an_error() -> None:
    from daemon.shell.process import output_pipes  # noqa: PLC0415 - only this test uses the shell directly

    before = set(os.listdir("/proc/self/fd"))
    with output_pipes() as (reads, writes):
        pass
    for fd in writes:
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(fd)
    for fd in reads:  # still open: the caller's
        os.close(fd)
    with pytest.raises(OSError, match="spawn failed"), output_pipes():
        raise OSError("spawn failed")
    assert set(os.listdir("/proc/self/fd")) == before
