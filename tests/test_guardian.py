"""The guardian (daemon/shell/guardian.py): what a SIGKILLed foundationd leaves behind is killed, and nothing else.

The guardian program runs for real (``python -I -S daemon/shell/guardian.py``) on a real pipe and real process groups;
the daemon tests kill real daemons. tests/test_daemon_lifecycle.py has the grandchild case end to end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from helpers import CHILDREN, RealProcesses

from agents.testing import exited, wait_for
from daemon.shell import guardian
from daemon.shell.guardian import GuardianLink

GUARDIAN = Path(guardian.__file__)


def group_with_grandchild(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A leader in a process group of its own with a grandchild in the same group (tests/children/grandparent.py)."""
    pidfile = tmp_path / f"grandchild-{len(list(tmp_path.iterdir()))}.pid"
    leader = subprocess.Popen([sys.executable, str(CHILDREN / "grandparent.py"), str(pidfile)], process_group=0)
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="the grandchild's pid")
    return leader, int(pidfile.read_text())


def run_guardian() -> tuple[subprocess.Popen[bytes], int]:
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen([sys.executable, "-I", "-S", str(GUARDIAN)], stdin=read_fd, stderr=subprocess.PIPE)
    os.close(read_fd)
    return proc, write_fd


def test_eof_kills_every_listed_group_and_nothing_else(tmp_path: Path) -> None:
    listed, listed_grandchild = group_with_grandchild(tmp_path)
    unlisted, unlisted_grandchild = group_with_grandchild(tmp_path)
    removed, removed_grandchild = group_with_grandchild(tmp_path)
    proc, pipe = run_guardian()
    try:
        os.write(pipe, f"+{listed.pid}\n+{removed.pid}\n".encode())
        os.write(pipe, b"junk\n+\n-x\n+1\n+99999999999999\n" + b"9" * 100 + b"\n")  # ignored, never fatal
        os.write(pipe, f"-{removed.pid}\n".encode())
        os.close(pipe)  # what foundationd's death looks like from here
        assert proc.wait(timeout=30) == 0
        assert listed.wait(timeout=30) == -signal.SIGKILL
        wait_for(lambda: exited(listed_grandchild), what="the listed group's grandchild")
        assert unlisted.poll() is None
        assert removed.poll() is None
        assert not exited(unlisted_grandchild)
        assert not exited(removed_grandchild)
        assert proc.stderr is not None
        assert f"killed process groups [{listed.pid}]" in proc.stderr.read().decode()
    finally:
        for leader in (listed, unlisted, removed):
            if leader.poll() is None:
                os.killpg(leader.pid, signal.SIGKILL)
            leader.wait(timeout=30)
        for pid in (unlisted_grandchild, removed_grandchild):
            wait_for(lambda p=pid: exited(p), what="cleanup")
        if proc.stderr is not None:
            proc.stderr.close()


def test_an_empty_list_at_eof_is_a_quiet_exit() -> None:
    proc, pipe = run_guardian()
    os.close(pipe)
    assert proc.wait(timeout=30) == 0
    assert proc.stderr is not None
    assert proc.stderr.read() == b""
    proc.stderr.close()


@pytest.mark.parametrize(("line", "expected"), [
    (b"+42", {7, 42}), (b"-7", set()), (b"+1", {7}), (b"+0", {7}), (b"-", {7}), (b"*42", {7}),
    (b"+12345678901", {7}), (b"+-3", {7}), (b"", {7}),
])
def test_records(line: bytes, expected: set[int]) -> None:
    groups = {7}
    guardian.apply(groups, line)
    assert groups == expected


class Launched(RealProcesses):
    """Real processes standing in for the guardian; ``reads`` says whether they drain their stdin."""

    def __init__(self, reads: bool) -> None:
        super().__init__("import sys; sys.stdin.buffer.read()" if reads else "import time; time.sleep(60)")

    def launch(self, argv: list[str], stdin_fd: int) -> int:
        assert argv[1:3] == ["-I", "-S"]
        return self.started(subprocess.Popen([sys.executable, "-c", self.script], stdin=stdin_fd))


def test_a_guardian_that_stops_reading_is_replaced_with_the_whole_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guardian, "PIPE_SIZE", 4096)
    fakes = Launched(reads=False)
    warnings: list[str] = []
    link = GuardianLink(fakes.launch, fakes.kill, warnings.append)
    try:
        link.start()
        first = link.pid
        for pgid in range(1000, 3000):  # ~12 KB of records: more than the pipe holds
            link.add(pgid)
        assert fakes.killed == [first]
        assert "not reading" in warnings[-1]
        link.exited("killed by SIGKILL")
        assert link.pid not in (None, first)
        assert link.groups == set(range(1000, 3000)), "the new guardian gets every group"
    finally:
        link.close()
        fakes.reap()


def test_a_dead_guardian_is_restarted_then_given_up() -> None:
    fakes = Launched(reads=True)
    warnings: list[str] = []
    link = GuardianLink(fakes.launch, fakes.kill, warnings.append)
    try:
        link.start()
        for _ in range(GuardianLink.MAX_RESTARTS):
            link.exited("exited with status 1")
            assert link.pid is not None
        link.exited("exited with status 1")
        assert link.pid is None
        assert "given up" in warnings[-1]
        assert len(fakes.procs) == GuardianLink.MAX_RESTARTS + 1
    finally:
        link.close()
        fakes.reap()


# ---- in a real daemon ----


def test_a_killed_guardian_is_replaced_and_still_guards(start_daemon, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "gp"
        command = ["{sys.executable}", "{CHILDREN / 'grandparent.py'}", "{pidfile}"]
    """)
    child = daemon.wait_running("gp")
    grandchild = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="grandchild pid"))
    with daemon.client() as client:
        old = client.request("status")["daemon"]["guardian"]["pid"]
        os.kill(old, signal.SIGKILL)
        new = wait_for(lambda: (p := client.request("status")["daemon"]["guardian"]["pid"]) not in (None, old) and p,
                       what="a new guardian")
    assert psutil.Process(new).ppid() == daemon.proc.pid
    daemon.wait_log("guardian killed by SIGKILL; starting another")
    daemon.kill(signal.SIGKILL)
    daemon.wait_exit()
    wait_for(lambda: exited(child), what="the child, by its parent-death signal")
    wait_for(lambda: exited(grandchild), what="the grandchild, by the new guardian")
    wait_for(lambda: exited(new), what="the guardian, once its work is done")
