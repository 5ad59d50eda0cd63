"""``state`` reads an agent's committed state through an LMDB environment the daemon keeps open
(daemon/services/state_reader.py): every commit is seen, and repeated requests open nothing new."""

from __future__ import annotations

import os

from agents.testing import DaemonProcess, wait_for

COUNTER = """
[[supervisor.children]]
name = "counter"
agent = "agents.examples.counter:Counter"
"""


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_repeated_state_requests_see_each_commit_and_open_nothing_new(start_daemon) -> None:
    d: DaemonProcess = start_daemon(COUNTER)
    d.wait_running("counter")
    d.request("send", name="counter", body={"add": 1})
    wait_for(lambda: d.request("state", name="counter")["state"] == {"count": 1}, what="first commit")
    opened = fds(d.proc.pid)
    for n in range(2, 30):
        d.request("send", name="counter", body={"add": 1})
        wait_for(lambda n=n: d.request("state", name="counter")["state"] == {"count": n}, what=f"commit {n}")
    assert fds(d.proc.pid) <= opened  # (one environment per request would add two descriptors each time)


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
