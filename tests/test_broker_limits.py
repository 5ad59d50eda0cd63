"""Timer requests an agent may make that must not hurt the daemon: far away, or absurdly frequent."""

from __future__ import annotations

import time

from helpers import REPO

from agents.testing import wait_for


def ticker(name: str, every: str) -> str:
    return f"""
[[supervisor.children]]
name = "{name}"
agent = "tests.agents_for_tests:Ticker"
working_dir = "{REPO}"
env = {{ TICK_EVERY = "{every}" }}
"""


def test_a_far_timer_and_a_nanosecond_timer_leave_the_daemon_well(start_daemon) -> None:
    daemon = start_daemon(ticker("far", "1e300") + ticker("fast", "1e-9"))
    far_pid = daemon.wait_running("far")
    daemon.wait_running("fast")

    def ticks() -> int:
        return daemon.request("call", name="fast", body={}, timeout=5)["reply"]["ticks"]

    first = wait_for(ticks, timeout=10, what="the fast ticker ticks")
    start = time.monotonic()
    wait_for(lambda: ticks() >= first + 20, timeout=10, what="20 more ticks")
    rate = (ticks() - first) / (time.monotonic() - start)
    assert rate < 150, f"{rate:.0f} ticks/s: the period is clamped to 10 ms"
    assert daemon.request("call", name="far", body={}, timeout=5)["reply"] == {"ticks": 0}
    assert daemon.pid("far") == far_pid  # nothing crashed: not the daemon, not the agent
    assert daemon.proc is not None
    assert daemon.proc.poll() is None
