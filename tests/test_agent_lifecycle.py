"""Agents run without setpriv in front: the runtime arms its own parent-death signal."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil

from agents.testing import wait_for

COUNTERS = """
[supervisor]
intensity = 100
period = 1
""" + "".join(
    f"""
[[supervisor.children]]
name = "c{i}"
agent = "agents.examples.counter:Counter"
""" for i in range(3)
)


def test_no_agent_outlives_a_sigkilled_daemon(start_daemon) -> None:
    daemon = start_daemon(COUNTERS)
    pids = [daemon.wait_running(f"c{i}") for i in range(3)]
    # Forked from the zygote, each shows the command line an exec'd agent would, with no wrapper in front.
    assert all(psutil.Process(pid).cmdline()[1:3] == ["-m", "agents.runtime"] for pid in pids)
    assert all(psutil.Process(pid).ppid() == daemon.proc.pid for pid in pids), "adopted by foundationd"
    daemon.kill(signal.SIGKILL)
    daemon.wait_exit()
    wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                             for p in pids), timeout=10, what="agents gone with their daemon")


def test_an_agent_started_by_a_dead_daemon_exits_at_once(tmp_path: Path) -> None:
    """The runtime's own check: its parent is not the daemon that spawned it (it died before the signal was armed)."""
    env = {"FOUNDATION_DAEMON_PID": "1", "FOUNDATION_NAME": "x", "FOUNDATION_BROKER": "ipc:///nonexistent",
           "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "agents.runtime", "agents.examples.counter:Counter"],
                          env=env, capture_output=True, timeout=30, check=False)
    assert proc.returncode == 1
