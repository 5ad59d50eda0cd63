"""Agents and notify children with ``user =``: they reach their sockets and own their state, and nothing of the
daemon's becomes more open than that needs (real daemon as root, real children as nobody).

The end-to-end tests need an interpreter nobody may run; where the venv's comes from a 0700 home (pyenv in
/root, as on the development machines) they skip. To run them there (2026-11-22 they passed so):
    /usr/bin/python3.11 -m venv /tmp/nvenv && /tmp/nvenv/bin/pip install -e '.[test]'
    /tmp/nvenv/bin/python -m pytest tests/test_agent_users.py
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import CHILDREN, REPO

from agents.testing import DaemonProcess
from ipc.errors import FoundationError

NOBODY = pwd.getpwnam("nobody")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="running children as nobody needs a root daemon")


def _nobody_runs_python() -> bool:
    try:
        subprocess.run([sys.executable, "-c", ""], user=NOBODY.pw_uid, group=NOBODY.pw_gid, extra_groups=[],
                       check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


NOBODY_RUNS_PYTHON = os.geteuid() == 0 and _nobody_runs_python()
needs_python_as_nobody = pytest.mark.skipif(
    not NOBODY_RUNS_PYTHON,
    reason=f"nobody cannot run {sys.executable} here (an interpreter under a 0700 home, e.g. pyenv in /root); "
    "test_an_agent_nobody_cannot_exec_is_refused_with_the_path checks that foundationd says so",
)


@pytest.fixture
def open_daemon() -> Iterator[Callable[[str], DaemonProcess]]:
    """Daemons whose directories live where nobody can traverse to them (pytest's tmp_path is 0700)."""
    base = Path(tempfile.mkdtemp(prefix="fb-users-"))
    base.chmod(0o711)
    started: list[DaemonProcess] = []

    def start(config: str) -> DaemonProcess:
        daemon = DaemonProcess(base, config, name=f"d{len(started)}")
        started.append(daemon)
        return daemon.start()

    try:
        yield start
    finally:
        for daemon in started:
            daemon.stop()
        shutil.rmtree(base)


def agent(name: str, ref: str, **extra: str) -> str:
    lines = ["[[supervisor.children]]", f'name = "{name}"', f'agent = "{ref}"', f'working_dir = "{REPO}"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def test_what_a_user_child_needs_is_prepared_before_it_starts(open_daemon) -> None:
    """Runs wherever the daemon is root: the agent may fail to start (see needs_python_as_nobody), but its
    directories and its broker socket are ready, and nothing else was opened."""
    daemon = open_daemon(agent("mine", "agents.examples.counter:Counter"))
    spec = {"name": "theirs", "agent": "agents.examples.counter:Counter", "user": "nobody",
            "restart": "temporary", "working_dir": str(REPO)}
    if not NOBODY_RUNS_PYTHON:  # test_an_agent_nobody_cannot_exec_is_refused_with_the_path covers that case
        pytest.skip(f"nobody cannot run {sys.executable} here, and the attach is refused before any preparation")
    # The agent may still fail to start (its imports): the attach may answer with the start failure.
    with daemon.client() as client, contextlib.suppress(FoundationError):
        client.request("attach", name="theirs", spec=spec)
    own = daemon.state_dir / "agents" / "theirs"
    assert (own.stat().st_uid, stat.S_IMODE(own.stat().st_mode)) == (NOBODY.pw_uid, 0o700)
    socket = daemon.runtime_dir / f"broker-{NOBODY.pw_uid}.sock"
    assert stat.S_ISSOCK(socket.stat().st_mode)
    assert (socket.stat().st_uid, stat.S_IMODE(socket.stat().st_mode)) == (NOBODY.pw_uid, 0o600)
    for directory in (daemon.runtime_dir, daemon.state_dir, daemon.state_dir / "agents"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o711, f"{directory}: traversable, not listable"
    for path in (daemon.runtime_dir / "control.sock", daemon.runtime_dir / "broker.sock"):
        assert (path.stat().st_uid, stat.S_IMODE(path.stat().st_mode)) == (0, 0o600)
    mine = daemon.state_dir / "agents" / "mine"
    assert (mine.stat().st_uid, stat.S_IMODE(mine.stat().st_mode)) == (0, 0o700)
    assert daemon.node("mine")["state"] == "running"


def test_an_agent_nobody_cannot_exec_is_refused_with_the_path(open_daemon, tmp_path: Path) -> None:
    """An interpreter (or a venv) under a 0700 directory: the attach says which path nobody cannot enter, at once,
    rather than starting an agent that exits 127 at every restart. pytest's tmp_path is such a directory."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    daemon = open_daemon("")
    spec = {"name": "theirs", "agent": "agents.examples.counter:Counter", "user": "nobody", "working_dir": str(REPO)}
    check = shutil.which("true")
    assert check is not None
    with daemon.client() as client:
        with pytest.raises(FoundationError) as info:
            client.request("attach", name="theirs", spec=spec)
        if NOBODY_RUNS_PYTHON:  # then nobody is refused only what it cannot reach: a command in the 0700 directory
            (private / "true").symlink_to(check)
            command = {"name": "theirs", "command": [str(private / "true")], "user": "nobody"}
            with pytest.raises(FoundationError) as info:
                client.request("attach", name="theirs", spec=command)
            closed = {private}
        else:  # the venv's directory (a clone under /root), or the interpreter's it links to (pyenv in /root)
            executable = Path(sys.executable)
            closed = {p for p in (*executable.parents, *executable.resolve().parents) if not _others_may_enter(p)}
    said = re.search(rf"uid {NOBODY.pw_uid} may not enter (\S+) \(search permission\)", info.value.message)
    assert said is not None, info.value
    assert Path(said[1]) in closed, info.value
    assert not (daemon.state_dir / "agents" / "theirs").exists()
    assert "theirs" not in [child["name"] for child in daemon.node("root")["children"]]


def _others_may_enter(directory: Path) -> bool:
    return bool(directory.stat().st_mode & stat.S_IXOTH)


@needs_python_as_nobody
def test_an_agent_runs_as_its_user_and_keeps_its_state(open_daemon) -> None:
    daemon = open_daemon("[supervisor]\nintensity = 100\nperiod = 1\n"
                         + agent("counter", "agents.examples.counter:Counter", user="nobody")
                         + agent("facts", "tests.agents_for_tests:Facts", user="nobody")
                         + agent("mine", "tests.agents_for_tests:Facts"))
    facts = daemon.request("call", name="facts", body={})["reply"]
    assert facts["uid"] == NOBODY.pw_uid
    assert facts["ppid"] == daemon.proc.pid
    assert daemon.request("call", name="mine", body={})["reply"]["uid"] == 0
    daemon.request("send", name="counter", body={"add": 5})
    assert daemon.request("call", name="counter", body={"get": True})["reply"] == {"count": 5}

    own = daemon.state_dir / "agents" / "counter"
    assert own.stat().st_uid == NOBODY.pw_uid
    assert all(entry.stat().st_uid == NOBODY.pw_uid for entry in own.iterdir())
    socket = daemon.runtime_dir / f"broker-{NOBODY.pw_uid}.sock"
    assert stat.S_ISSOCK(socket.stat().st_mode)
    assert (socket.stat().st_uid, stat.S_IMODE(socket.stat().st_mode)) == (NOBODY.pw_uid, 0o600)
    for directory in (daemon.runtime_dir, daemon.state_dir, daemon.state_dir / "agents"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o711, f"{directory}: traversable, not listable"
    assert stat.S_IMODE((daemon.runtime_dir / "control.sock").stat().st_mode) == 0o600
    assert stat.S_IMODE((daemon.runtime_dir / "broker.sock").stat().st_mode) == 0o600
    assert stat.S_IMODE((daemon.state_dir / "agents" / "mine").stat().st_mode) == 0o700

    old = daemon.wait_running("counter")
    os.kill(old, signal.SIGKILL)
    daemon.wait_running("counter", not_pid=old)
    assert daemon.request("call", name="counter", body={"get": True})["reply"] == {"count": 5}
    assert daemon.request("state", name="counter")["state"] == {"count": 5}


@needs_python_as_nobody
def test_a_state_directory_left_by_a_root_run_is_handed_to_the_user(open_daemon) -> None:
    first = open_daemon(agent("counter", "agents.examples.counter:Counter"))
    first.request("send", name="counter", body={"add": 2})
    assert first.request("call", name="counter", body={"get": True})["reply"] == {"count": 2}
    first.stop()
    assert (first.state_dir / "agents" / "counter").stat().st_uid == 0
    again = DaemonProcess(first.base, agent("counter", "agents.examples.counter:Counter", user="nobody"),
                          name="d0")
    again.start()
    try:
        assert again.request("call", name="counter", body={"get": True})["reply"] == {"count": 2}
        assert (again.state_dir / "agents" / "counter" / "data.mdb").stat().st_uid == NOBODY.pw_uid
    finally:
        again.stop()


@needs_python_as_nobody
def test_a_notify_child_as_another_user_reaches_its_socket(open_daemon) -> None:
    command = json.dumps([sys.executable, str(CHILDREN / "sd_child.py"), "--status", "as nobody"])
    daemon = open_daemon(f"""
[[supervisor.children]]
name = "svc"
command = {command}
ready = "notify"
user = "nobody"
start_timeout = 20
""")
    daemon.wait_running("svc")
    assert daemon.node("svc")["status"] == "as nobody"
