"""Stopping, killing and shutting down a real foundationd: nothing may be left behind, whoever dies first.

Also: config errors at start-up, file descriptor hygiene across restarts and the child output relay.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import SLEEP, ctl, script

from agents.testing import exited, processes_with_marker, wait_for
from ipc.control import ControlClient


def read_pid(path: Path) -> int:
    return wait_for(lambda: path.exists() and int(path.read_text()), what=f"a pid in {path}")


def stubborn(shutdown: float = 0.5) -> str:
    return f"""
        [[supervisor.children]]
        name = "stubborn"
        command = {script("ignore_term.py")}
        shutdown = {shutdown}
    """


# ---- SIGTERM-ignoring children ----


def test_ctl_stop_sigkills_a_child_that_ignores_sigterm(start_daemon) -> None:
    daemon = start_daemon(stubborn())
    daemon.wait_log("stubborn | READY")
    pid = daemon.wait_running("stubborn")
    began = time.monotonic()
    done = ctl(daemon, "stop", "stubborn", timeout=20)
    elapsed = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopped stubborn"
    assert elapsed >= 0.45  # it waited for the shutdown time, then killed
    node = daemon.node("stubborn")
    assert node["state"] == "stopped"
    assert node["pid"] is None
    assert "SIGKILL" in node["last_exit"]
    assert exited(pid)
    assert "stubborn did not stop within 0.5s; sending SIGKILL" in daemon.log()


def test_daemon_sigterm_sigkills_a_child_that_ignores_sigterm(start_daemon) -> None:
    daemon = start_daemon(stubborn())
    daemon.wait_log("stubborn | READY")
    pid = daemon.wait_running("stubborn")
    daemon.kill(signal.SIGTERM)
    assert daemon.wait_exit(timeout=20) == 0, daemon.log()
    log = daemon.log()
    assert "stubborn did not stop within 0.5s; sending SIGKILL" in log
    assert "stopped stubborn (killed by SIGKILL)" in log
    assert exited(pid)
    wait_for(lambda: not daemon.leftovers(), what="no process left behind")


# ---- grandchildren ----


def test_grandchild_of_a_sigkilled_child_is_not_left_behind(start_daemon, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "gp"
        command = {script("grandparent.py", pidfile)}
    """)
    child = daemon.wait_running("gp")
    grandchild = read_pid(pidfile)
    assert not exited(grandchild)
    pidfile.unlink()
    os.kill(child, signal.SIGKILL)
    wait_for(lambda: exited(grandchild), what="the grandchild killed with its parent's group")
    # The restarted child has a grandchild of its own, alive.
    daemon.wait_running("gp", not_pid=child)
    second = read_pid(pidfile)
    assert second != grandchild
    assert not exited(second)


def test_grandchild_of_a_stopped_child_is_stopped_too(start_daemon, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "gp"
        command = {script("grandparent.py", pidfile)}
    """)
    daemon.wait_running("gp")
    grandchild = read_pid(pidfile)
    assert daemon.request("stop", name="gp")["state"] == "stopped"
    wait_for(lambda: exited(grandchild), what="the grandchild stopped with its parent's group")


# ---- a SIGKILLed daemon ----


def test_no_child_outlives_a_sigkilled_daemon(start_daemon) -> None:
    daemon = start_daemon(f"""
        {stubborn(shutdown=5)}
        [[supervisor.children]]
        name = "plain"
        command = {SLEEP}
        [[supervisor.children]]
        name = "inner"
        [[supervisor.children.children]]
        name = "nested"
        command = {SLEEP}
    """)
    daemon.wait_log("stubborn | READY")
    pids = [daemon.wait_running(name) for name in ("stubborn", "plain", "nested")]
    marker = str(daemon.runtime_dir)
    assert set(pids) <= {p.pid for p in processes_with_marker(marker)}  # the marker does find them
    daemon.kill(signal.SIGKILL)
    assert daemon.wait_exit() == -signal.SIGKILL
    wait_for(lambda: not processes_with_marker(marker), what="every child dead after the daemon")


def test_no_child_outlives_a_daemon_sigkilled_right_after_a_spawn(start_daemon) -> None:
    # The attach reply comes once the children have exec'd setpriv, maybe before setpriv armed PDEATHSIG: the
    # race the sh guard in daemon/shell/process.py closes (without it, 4 runs in 10 leaked a child under CPU load).
    daemon = start_daemon("")
    assert daemon.proc is not None
    burst = {"name": "burst", "children": [{"name": f"late{i}", "command": ["sleep", "1000"]} for i in range(20)]}
    with daemon.client() as client:
        client.request("attach", spec=burst)
        daemon.kill(signal.SIGKILL)
    daemon.wait_exit()
    wait_for(lambda: not daemon.leftovers(), what="every child dead after the daemon")


def test_no_grandchild_outlives_a_sigkilled_daemon(start_daemon, tmp_path: Path) -> None:
    """PDEATHSIG reaches only the child; the guardian (daemon/shell/guardian.py) kills the rest of its group."""
    pidfile = tmp_path / "grandchild.pid"
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "gp"
        command = {script("grandparent.py", pidfile)}
    """)
    child = daemon.wait_running("gp")
    grandchild = read_pid(pidfile)
    daemon.kill(signal.SIGKILL)
    daemon.wait_exit()
    try:
        wait_for(lambda: exited(child), what="the child killed by PDEATHSIG")
        wait_for(lambda: exited(grandchild), timeout=1.5, what="the grandchild")
    finally:
        if not exited(grandchild):  # clean up after the gap, so the leftover check stays meaningful
            os.kill(grandchild, signal.SIGKILL)


# ---- orderly shutdown ----


def stopped_order(log: str) -> list[str]:
    return re.findall(r"INFO: stopped (\S+) \(", log)


def test_sigterm_stops_children_in_reverse_order_and_exits_0(start_daemon) -> None:
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "a"
        command = {SLEEP}
        [[supervisor.children]]
        name = "b"
        command = {SLEEP}
        [[supervisor.children]]
        name = "inner"
        strategy = "rest_for_one"
        [[supervisor.children.children]]
        name = "c"
        command = {SLEEP}
        [[supervisor.children.children]]
        name = "d"
        command = {SLEEP}
        [[supervisor.children]]
        name = "e"
        command = {SLEEP}
    """)
    pids = [daemon.wait_running(name) for name in "abcde"]
    daemon.kill(signal.SIGTERM)
    assert daemon.wait_exit() == 0, daemon.log()
    log = daemon.log()
    assert stopped_order(log) == ["e", "d", "c", "b", "a"], log
    assert "received SIGTERM" in log
    assert "halting: orderly shutdown" in log
    assert all(exited(pid) for pid in pids)


def test_shutdown_verb_exits_0(start_daemon) -> None:
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "a"
        command = {SLEEP}
        [[supervisor.children]]
        name = "b"
        command = {SLEEP}
    """)
    daemon.wait_running("b")
    assert daemon.request("shutdown") == {"stopping": True}
    assert daemon.wait_exit() == 0, daemon.log()
    assert stopped_order(daemon.log()) == ["b", "a"]


# ---- config errors ----


def run_foundationd(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "daemon.main", "--runtime-dir", str(tmp_path / "run"),
            "--state-dir", str(tmp_path / "state"), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)


BAD_CONFIGS = {
    "unknown_key": (
        """
        [[supervisor.children]]
        name = "a"
        comand = ["sleep", "1000"]
        """,
        "supervisor.children[0].comand",
    ),
    "unknown_strategy": (
        """
        [supervisor]
        strategy = "one_for_some"
        """,
        "supervisor.strategy",
    ),
    "unknown_nested_strategy": (
        """
        [[supervisor.children]]
        name = "inner"
        strategy = "all_for_one"
        """,
        "supervisor.children[0].strategy",
    ),
    "duplicate_names": (
        """
        [[supervisor.children]]
        name = "a"
        command = ["sleep", "1000"]
        [[supervisor.children]]
        name = "inner"
        [[supervisor.children.children]]
        name = "a"
        command = ["sleep", "1000"]
        """,
        "supervisor.children[1].children[0].name",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_invalid_config_exits_2_with_one_line_naming_the_key(tmp_path: Path, case: str) -> None:
    text, key = BAD_CONFIGS[case]
    config = tmp_path / "bad.toml"
    config.write_text(text)
    done = run_foundationd(tmp_path, "--config", str(config))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert key in lines[0]
    assert not (tmp_path / "run" / "control.sock").exists()


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    done = run_foundationd(tmp_path, "--config", str(tmp_path / "nope.toml"))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "nope.toml" in lines[0]


# ---- file descriptors ----


def fd_targets(pid: int) -> list[str]:
    fds = Path(f"/proc/{pid}/fd")
    targets = []
    for fd in fds.iterdir():
        try:
            targets.append(os.readlink(fd))
        except FileNotFoundError:
            continue
    return targets


def test_restarts_leak_no_file_descriptors(start_daemon) -> None:
    daemon = start_daemon(f"""
        [supervisor]
        intensity = 100
        period = 1
        [[supervisor.children]]
        name = "w"
        command = {SLEEP}
    """)
    assert daemon.proc is not None
    dpid = daemon.proc.pid
    with ControlClient(daemon.socket_path) as client:
        # Two round trips: connections closed before ours are surely dropped by the daemon by now.
        client.request("status")
        client.request("status")
        baseline = len(fd_targets(dpid))
        pid = daemon.wait_running("w")
        for i in range(20):
            if i % 2:
                os.kill(pid, signal.SIGKILL)
            else:
                client.request("restart", name="w")
            pid = daemon.wait_running("w", not_pid=pid)
        assert daemon.node("w")["restarts"] >= 10
        client.request("status")
        client.request("status")
        wait_for(lambda: len(fd_targets(dpid)) == baseline, timeout=5,
                 what=f"fd count back to {baseline}: {fd_targets(dpid)}")
        targets = fd_targets(dpid)
        # w's pidfd and its stdout and stderr pipes, and the guardian's pidfd, two output pipes and record pipe:
        # nothing else.
        assert sum(t == "anon_inode:[pidfd]" for t in targets) == 2, targets
        assert sum(t.startswith("pipe:") for t in targets) == 5, targets


# ---- child output ----


def test_child_output_is_relayed_whole_lines_with_name_prefix(start_daemon) -> None:
    count = 300
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "printer"
        restart = "transient"
        command = {script("printer.py", count)}
    """)
    daemon.wait_log("printer is transient: not restarted")
    relayed = [line for line in daemon.log().splitlines() if "printer |" in line]
    expected = [
        f"printer | line {i} first-half second-half" if i % 10 == 0 else f"printer | line {i}" for i in range(count)
    ]
    assert relayed == [*expected, "printer | tail-without-newline"]
