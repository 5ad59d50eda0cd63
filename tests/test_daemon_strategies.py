"""Restart strategies, restart intensity and restart types, with a real foundationd and real child processes.

Each test SIGKILLs or lets exit one child of a running daemon and then checks, through `status` and the daemon's
log, exactly which children were restarted (new pids) and which were left alone (same pids).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from pathlib import Path

from helpers import SLEEP, script

from agents.testing import DaemonProcess, exited, wait_for


def three_sleepers(strategy: str) -> str:
    return f"""
        [supervisor]
        strategy = "{strategy}"
        intensity = 5
        period = 10
        [[supervisor.children]]
        name = "a"
        command = {SLEEP}
        [[supervisor.children]]
        name = "b"
        command = {SLEEP}
        [[supervisor.children]]
        name = "c"
        command = {SLEEP}
    """


def kill_and_settle(daemon: DaemonProcess, victim: str, names: Sequence[str], restarted: set[str]) -> dict[str, int]:
    """SIGKILL `victim`; wait until every child in `restarted` runs again with a new pid; return all pids."""
    before = {name: daemon.wait_running(name) for name in names}
    os.kill(before[victim], signal.SIGKILL)
    for name in sorted(restarted):
        daemon.wait_running(name, not_pid=before[name])
    after = {name: daemon.wait_running(name) for name in names}
    changed = {name for name in names if after[name] != before[name]}
    assert changed == restarted, (before, after, daemon.log())
    for name in restarted:
        wait_for(lambda n=name: exited(before[n]), what=f"old {name} gone")
    for name in set(names) - restarted:
        assert not exited(before[name])
    return after


def test_one_for_one_restarts_only_the_dead_child(start_daemon) -> None:
    daemon = start_daemon(three_sleepers("one_for_one"))
    kill_and_settle(daemon, "b", "abc", {"b"})
    assert daemon.node("b")["restarts"] == 1
    assert daemon.node("b")["last_exit"] == "killed by SIGKILL"
    assert daemon.node("a")["restarts"] == daemon.node("c")["restarts"] == 0
    assert daemon.status()["tree"]["restarts"] == 1


def test_one_for_all_restarts_every_child(start_daemon) -> None:
    daemon = start_daemon(three_sleepers("one_for_all"))
    kill_and_settle(daemon, "b", "abc", {"a", "b", "c"})
    log = daemon.log()
    assert "one_for_all: restarting a, b, c" in log
    # The survivors are stopped in reverse order before all three start again in order.
    stops = [line for line in log.splitlines() if "stopped " in line]
    assert [s.split("stopped ")[1].split()[0] for s in stops] == ["c", "a"], log
    assert daemon.status()["tree"]["restarts"] == 1


def test_rest_for_one_restarts_the_child_and_those_after_it(start_daemon) -> None:
    daemon = start_daemon(three_sleepers("rest_for_one"))
    kill_and_settle(daemon, "b", "abc", {"b", "c"})
    assert "rest_for_one: restarting b, c" in daemon.log()
    assert daemon.node("a")["restarts"] == 0


def test_rest_for_one_last_child_restarts_alone(start_daemon) -> None:
    daemon = start_daemon(three_sleepers("rest_for_one"))
    kill_and_settle(daemon, "c", "abc", {"c"})


def test_one_for_all_in_nested_supervisor_stays_inside_it(start_daemon) -> None:
    daemon = start_daemon(f"""
        [supervisor]
        strategy = "one_for_all"
        [[supervisor.children]]
        name = "outside"
        command = {SLEEP}
        [[supervisor.children]]
        name = "inner"
        strategy = "one_for_all"
        [[supervisor.children.children]]
        name = "x"
        command = {SLEEP}
        [[supervisor.children.children]]
        name = "y"
        command = {SLEEP}
    """)
    kill_and_settle(daemon, "y", ["outside", "x", "y"], {"x", "y"})
    assert daemon.node("inner")["restarts"] == 1
    assert daemon.status()["tree"]["restarts"] == 0


# ---- restart intensity ----


def test_nested_intensity_exceeded_parent_restarts_the_supervisor(start_daemon) -> None:
    daemon = start_daemon(f"""
        [supervisor]
        strategy = "one_for_one"
        intensity = 3
        period = 10
        [[supervisor.children]]
        name = "outside"
        command = {SLEEP}
        [[supervisor.children]]
        name = "inner"
        strategy = "one_for_one"
        intensity = 0
        period = 10
        [[supervisor.children.children]]
        name = "x"
        command = {SLEEP}
        [[supervisor.children.children]]
        name = "y"
        command = {SLEEP}
    """)
    kill_and_settle(daemon, "y", ["outside", "x", "y"], {"x", "y"})
    log = daemon.log()
    assert "supervisor inner failed: more than 0 restarts in 10.0s (last: y)" in log
    assert "stopped x (killed by SIGTERM)" in log  # the failing supervisor stopped its other child
    inner = daemon.node("inner")
    assert inner["state"] == "running"
    assert daemon.status()["tree"]["restarts"] == 1  # the root counted one restart: of inner
    assert daemon.status()["tree"]["state"] == "running"


def test_root_intensity_exceeded_ends_the_daemon_non_zero(start_daemon) -> None:
    daemon = start_daemon(f"""
        [supervisor]
        intensity = 0
        [[supervisor.children]]
        name = "stubborn"
        command = {script("ignore_term.py")}
        shutdown = 0.5
        [[supervisor.children]]
        name = "victim"
        command = {SLEEP}
        [[supervisor.children]]
        name = "other"
        command = {SLEEP}
    """)
    daemon.wait_log("stubborn | READY")
    pids = {name: daemon.wait_running(name) for name in ("stubborn", "victim", "other")}
    os.kill(pids["victim"], signal.SIGKILL)
    daemon.expect_exit(1)  # the root fails, and the daemon with it: what the test is about
    code = daemon.wait_exit(timeout=20)
    assert code != 0, daemon.log()
    log = daemon.log()
    assert "supervisor root failed" in log
    assert "halting: root supervisor failed" in log
    assert "stubborn did not stop within 0.5s; sending SIGKILL" in log
    wait_for(lambda: not daemon.leftovers(), what="no process left behind")
    assert all(exited(pid) for pid in pids.values())


# ---- restart types ----


def test_transient_normal_exit_is_not_restarted(start_daemon) -> None:
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "t"
        restart = "transient"
        command = {script("exit_after.py", 0, 0.1)}
    """)
    daemon.wait_log("t is transient: not restarted")
    node = daemon.node("t")
    assert node["state"] == "stopped"
    assert node["pid"] is None
    assert node["restarts"] == 0
    assert node["last_exit"] == "exited with status 0"
    assert daemon.status()["tree"]["restarts"] == 0


def test_transient_abnormal_exit_is_restarted(start_daemon, tmp_path: Path) -> None:
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "t"
        restart = "transient"
        command = {script("exit_after.py", 1, 0.1, tmp_path / "once")}
    """)
    daemon.wait_log("t | second run: staying up")
    node = daemon.node("t")
    assert node["state"] == "running"
    assert node["restarts"] == 1
    assert node["last_exit"] == "exited with status 1"
    assert "restarting t" in daemon.log()


def test_transient_killed_by_a_foreign_signal_is_restarted(start_daemon) -> None:
    # SIGTERM not sent by the daemon is an abnormal exit (DESIGN 4).
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "t"
        restart = "transient"
        command = {SLEEP}
    """)
    first = daemon.wait_running("t")
    os.kill(first, signal.SIGTERM)
    daemon.wait_running("t", not_pid=first)
    assert daemon.node("t")["restarts"] == 1
    assert daemon.node("t")["last_exit"] == "killed by SIGTERM"


def test_temporary_is_never_restarted(start_daemon) -> None:
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "crashes"
        restart = "temporary"
        command = {script("exit_after.py", 1, 0.1)}
        [[supervisor.children]]
        name = "killed"
        restart = "temporary"
        command = {SLEEP}
        [[supervisor.children]]
        name = "finishes"
        restart = "temporary"
        command = {script("exit_after.py", 0, 0.1)}
    """)
    os.kill(daemon.wait_running("killed"), signal.SIGKILL)
    for name in ("crashes", "killed", "finishes"):
        daemon.wait_log(f"{name} is temporary: not restarted")
    states = {name: daemon.node(name) for name in ("crashes", "killed", "finishes")}
    assert {name: node["state"] for name, node in states.items()} == {
        "crashes": "failed",
        "killed": "failed",
        "finishes": "stopped",
    }
    assert all(node["pid"] is None and node["restarts"] == 0 for node in states.values())
    assert "restarting" not in daemon.log()
    assert daemon.status()["tree"]["restarts"] == 0
