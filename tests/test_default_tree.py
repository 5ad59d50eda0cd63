"""The embedded default tree (what `make run` starts) comes up whole and its counter agent works."""

from __future__ import annotations

from agents.testing import wait_for


def test_default_tree_runs_and_the_counter_counts(start_daemon) -> None:
    daemon = start_daemon(None)
    for name in ("ticker", "flaky", "counter", "stage1", "stage2"):
        daemon.wait_running(name)
    assert daemon.request("send", name="counter", body={"add": 5})["id"].startswith("counter/")
    reply = wait_for(lambda: daemon.request("call", name="counter", body={"get": True})["reply"], timeout=10)
    assert reply == {"count": 5}
    # Children's output reaches the log with their names in front (each child's own line, in any interleaving).
    for line in ("ticker | ticker: tick 1", "stage1 | stage1: tick 1", "stage2 | stage2: tick 1"):
        daemon.wait_log(line, timeout=10)
