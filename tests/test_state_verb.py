"""``state`` reads an agent's committed state through an LMDB environment the daemon keeps open
(daemon/services/state_reader.py): every commit is seen, and repeated requests open nothing new."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from agents.testing import DaemonProcess, wait_for
from daemon.services.state_reader import StateReaders
from ipc.state_store import agent_state_path

COUNTER = """
[[supervisor.children]]
name = "counter"
agent = "agents.examples.counter:Counter"
"""


def state_fds(pid: int, state_dir: object) -> int:
    """The daemon's descriptors on files of the agents' state directory (data.mdb, lock.mdb)."""
    prefix = f"{state_dir}/agents/"
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith(prefix)
        except FileNotFoundError:  # closed meanwhile
            pass
    return count


def test_repeated_state_requests_see_each_commit_and_open_nothing_new(start_daemon) -> None:
    d: DaemonProcess = start_daemon(COUNTER)
    d.wait_running("counter")
    d.request("send", name="counter", body={"add": 1})
    wait_for(lambda: d.request("state", name="counter")["state"] == {"count": 1}, what="first commit")
    opened = state_fds(d.proc.pid, d.state_dir)
    assert opened >= 1  # the environment it keeps open
    for n in range(2, 30):
        d.request("send", name="counter", body={"add": 1})
        wait_for(lambda n=n: d.request("state", name="counter")["state"] == {"count": n}, what=f"commit {n}")
    assert state_fds(d.proc.pid, d.state_dir) == opened  # one environment per request would add more each time


def test_a_detached_agent_state_environment_is_closed(start_daemon) -> None:
    d: DaemonProcess = start_daemon(COUNTER)
    d.wait_running("counter")
    d.request("send", name="counter", body={"add": 2})
    wait_for(lambda: d.request("state", name="counter")["state"] == {"count": 2}, what="commit")
    path = str(d.state_dir / "agents" / "counter" / "data.mdb")

    def daemon_maps_it() -> bool:
        return any(os.readlink(f"/proc/{d.proc.pid}/fd/{fd}") == path
                   for fd in os.listdir(f"/proc/{d.proc.pid}/fd") if os.path.exists(f"/proc/{d.proc.pid}/fd/{fd}"))

    assert daemon_maps_it()
    d.request("detach", name="counter")
    wait_for(lambda: not daemon_maps_it(), what="the daemon closes the detached agent's environment")


def commit_elsewhere(path: object, state: object, seq: int) -> None:
    """A commit by another process, as the agent makes it (py-lmdb allows one environment per path a process)."""
    code = ("import sys, orjson\nfrom ipc.state_store import StateStore\n"
            "s = StateStore(sys.argv[1]); s.commit(orjson.loads(sys.argv[2]), int(sys.argv[3])); s.close()")
    subprocess.run([sys.executable, "-c", code, str(path), orjson.dumps(state).decode(), str(seq)], check=True,
                   timeout=30)


def test_the_reader_keeps_one_environment_per_agent_and_sees_new_commits(tmp_path: Path) -> None:
    readers = StateReaders(tmp_path)
    assert readers.load("a") == (None, 0)  # nothing committed yet: nothing opened
    path = agent_state_path(tmp_path, "a")
    commit_elsewhere(path, {"n": 1}, 1)
    assert readers.load("a") == ({"n": 1}, 1)
    kept = readers._open["a"]
    commit_elsewhere(path, {"n": 2}, 2)
    assert readers.load("a") == ({"n": 2}, 2)
    assert readers._open["a"] is kept  # the same environment, not one per request
    readers.forget("a")
    assert "a" not in readers._open
    readers.close()
