"""Children with ``ready = "notify"``: sd_notify(3) from child to daemon, over the daemon's socket for children.

The child program is tests/children/sd_child.py: it sends READY=1 / STATUS= / WATCHDOG=1 as a systemd service
would, and writes the CLOCK_BOOTTIME instant of its READY=1 to a stamp file, comparable with a sibling's process
start time in /proc/PID/stat.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
from helpers import CHILDREN, SLEEP, ctl, in_log, started_at

from agents.testing import wait_for
from ipc.errors import FoundationError


def sd_child(*args: object) -> str:
    """A TOML command array running tests/children/sd_child.py with these options."""
    return json.dumps([sys.executable, str(CHILDREN / "sd_child.py"), *map(str, args)])


# ---- READY=1 ----


def test_next_sibling_starts_only_after_ready(start_daemon, tmp_path) -> None:
    stamp = tmp_path / "slow.ready"
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "slow"
        command = {sd_child("--ready-after", 0.5, "--stamp", stamp)}
        ready = "notify"
        [[supervisor.children]]
        name = "next"
        command = {SLEEP}
    """)
    next_pid = daemon.wait_running("next")
    slow_pid = daemon.wait_running("slow")
    ready_at = float(stamp.read_text())  # written before READY=1 was sent, so it exists by now
    tick = 1 / os.sysconf("SC_CLK_TCK")
    assert ready_at >= started_at(slow_pid) + 0.45  # the child did take its time
    assert started_at(next_pid) >= ready_at - tick, "the sibling started before READY=1"


def test_status_text_appears_in_status_json(start_daemon, tmp_path) -> None:
    gate = tmp_path / "go"
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "svc"
        command = {sd_child("--ready-when", gate, "--status", "serving 3 queues")}
        ready = "notify"
    """)
    # Before READY=1 the child is starting and shows what it said so far.
    wait_for(lambda: daemon.node("svc").get("status") == "warming up", what="STATUS=warming up")
    assert daemon.node("svc")["state"] == "starting"
    gate.write_text("")
    daemon.wait_running("svc")
    done = ctl(daemon, "status", "--json")
    assert done.returncode == 0, done.stderr
    [svc] = json.loads(done.stdout)["tree"]["children"]
    assert svc["name"] == "svc"
    assert svc["state"] == "running"
    assert svc["status"] == "serving 3 queues"


@pytest.mark.skipif(shutil.which("systemd-notify") is None, reason="needs systemd-notify(1)")
def test_a_shell_script_using_systemd_notify(start_daemon) -> None:
    """systemd's own client, run by a script: a short-lived sender in the child's process group."""
    script = 'systemd-notify --status="from the shell" && systemd-notify --ready && exec sleep 1000'
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "script"
        command = {json.dumps(["sh", "-c", script])}
        ready = "notify"
        start_timeout = 10
        [[supervisor.children]]
        name = "next"
        command = {SLEEP}
    """)
    daemon.wait_running("next", timeout=15)
    node = daemon.node("script")
    assert node["state"] == "running"
    assert node["status"] == "from the shell"
    assert "was not ready within" not in daemon.log()


# ---- start_timeout ----


@pytest.mark.parametrize("nested", [False, True])
def test_never_ready_at_boot_fails_the_supervisor_and_the_daemon(start_daemon, nested: bool) -> None:
    child = f"""
        name = "mute"
        command = {sd_child("--never-ready")}
        ready = "notify"
        start_timeout = 0.5
    """
    if nested:
        config = f"""
            [[supervisor.children]]
            name = "sub"
            [[supervisor.children.children]]
            {child}
            [[supervisor.children]]
            name = "after"
            command = {SLEEP}
        """
    else:
        config = f"""
            [[supervisor.children]]
            {child}
            [[supervisor.children]]
            name = "after"
            command = {SLEEP}
        """
    daemon = start_daemon(config, wait=False)
    daemon.expect_exit(1)  # the root fails, and the daemon with it: what the test is about
    assert daemon.wait_exit() == 1
    log = daemon.log()
    assert "mute was not ready within 0.5s; killing it" in log
    assert "root supervisor failed" in log
    assert "started after" not in log  # the sibling never started


def test_never_ready_during_a_restart_counts_as_a_crash(start_daemon, tmp_path) -> None:
    runs = tmp_path / "runs"
    daemon = start_daemon(f"""
        [supervisor]
        intensity = 5
        period = 30
        [[supervisor.children]]
        name = "flaky"
        command = {sd_child("--count", runs, "--only-run", 2, "--never-ready")}
        ready = "notify"
        start_timeout = 0.5
        [[supervisor.children]]
        name = "plain"
        command = {SLEEP}
    """)
    first = daemon.wait_running("flaky")
    plain = daemon.wait_running("plain")
    os.kill(first, signal.SIGKILL)  # restart 1; the second run never sends READY=1
    in_log(daemon, "flaky was not ready within 0.5s; killing it")
    # ... which is a crash like any other: restart 2, and the third run is fine.
    third = daemon.wait_running("flaky", not_pid=first)
    wait_for(lambda: runs.read_text() == "3", what="a third run")
    assert daemon.pid("flaky") == third
    node = daemon.node("flaky")
    assert node["restarts"] == 2
    assert "SIGKILL" in node["last_exit"]
    assert daemon.status()["tree"]["restarts"] == 2
    assert daemon.pid("plain") == plain


def test_never_ready_during_a_restart_escalates_past_intensity(start_daemon, tmp_path) -> None:
    runs = tmp_path / "runs"
    daemon = start_daemon(f"""
        [supervisor]
        intensity = 1
        period = 30
        [[supervisor.children]]
        name = "flaky"
        command = {sd_child("--count", runs, "--only-run", 2, "--never-ready")}
        ready = "notify"
        start_timeout = 0.5
    """)
    os.kill(daemon.wait_running("flaky"), signal.SIGKILL)  # restart 1 of 1; the start failure is one more
    daemon.expect_exit(1)  # the root fails, and the daemon with it: what the test is about
    assert daemon.wait_exit() == 1
    assert "flaky was not ready within 0.5s" in daemon.log()
    assert runs.read_text() == "2"


@pytest.mark.parametrize("nested", [False, True])
def test_a_shutdown_stops_a_child_that_is_still_starting(start_daemon, tmp_path, nested: bool) -> None:
    child = f"""
        name = "starting"
        command = {sd_child("--ready-when", tmp_path / "never")}
        ready = "notify"
        start_timeout = 60
    """
    table = "[[supervisor.children]]"
    if nested:  # the starting child's supervisor is itself still starting
        table = '[[supervisor.children]]\nname = "sub"\n[[supervisor.children.children]]'
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "first"
        command = {SLEEP}
        {table}
        {child}
    """)
    wait_for(lambda: daemon.node("starting").get("status") == "warming up", what="the child starting")
    daemon.kill(signal.SIGTERM)
    assert daemon.wait_exit(timeout=20) == 0  # not after the 60 s start_timeout
    log = daemon.log()
    assert "stopped starting (killed by SIGTERM)" in log
    assert "was not ready within" not in log
    assert log.index("stopped starting") < log.index("stopped first")  # reverse start order still


# ---- WATCHDOG=1 ----


def test_a_child_that_stops_pinging_is_killed_and_restarted(start_daemon, tmp_path) -> None:
    runs = tmp_path / "runs"
    # watchdog = 0.6 s: the child reads WATCHDOG_USEC and pings every 0.3 s; its first run stops after 2 pings.
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "pinger"
        command = {sd_child("--ping-every", "auto", "--count", runs, "--only-run", 1, "--pings", 2)}
        ready = "notify"
        watchdog = 0.6
    """)
    first = daemon.wait_running("pinger")
    in_log(daemon, "pinger | run 1 ping 2")
    in_log(daemon, "pinger sent no WATCHDOG=1 for 0.6s; killing it")
    second = daemon.wait_running("pinger", not_pid=first)
    node = daemon.node("pinger")
    assert node["restarts"] == 1
    assert "SIGKILL" in node["last_exit"]
    # The second run keeps pinging: it outlives its watchdog several times over.
    in_log(daemon, "pinger | run 2 ping 6")
    assert daemon.pid("pinger") == second
    assert daemon.log().count("sent no WATCHDOG=1") == 1


# ---- credentials ----


def test_messages_from_outside_a_notify_childs_group_are_ignored(start_daemon, tmp_path) -> None:
    gate = tmp_path / "go"
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "svc"
        command = {sd_child("--ready-when", gate)}
        ready = "notify"
        start_timeout = 30
        [[supervisor.children]]
        name = "next"
        command = {SLEEP}
    """)
    wait_for(lambda: daemon.node("svc").get("status") == "warming up", what="the child's own STATUS=")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as forger:
        forger.sendto(b"READY=1\nSTATUS=forged\nWATCHDOG=1", str(daemon.runtime_dir / "notify.sock"))
    in_log(daemon, f"ignored a message from pid {os.getpid()}, not in a notify child's group")
    svc = daemon.node("svc")
    assert svc["state"] == "starting"
    assert svc["status"] == "warming up"
    assert daemon.node("next")["pid"] is None  # still waiting behind svc
    gate.write_text("")  # the real READY=1 still works
    daemon.wait_running("svc")
    daemon.wait_running("next")
    assert daemon.node("svc")["status"] == "serving"


# ---- config ----


def test_watchdog_without_notify_is_a_config_error_naming_the_key(tmp_path, start_daemon) -> None:
    bad = """
        [[supervisor.children]]
        name = "plain"
        command = ["sleep", "1000"]
        watchdog = 2
    """
    path = tmp_path / "bad.toml"
    path.write_text(textwrap.dedent(bad))
    done = subprocess.run(
        [sys.executable, "-m", "daemon.main", "--config", str(path), "--runtime-dir", str(tmp_path / "run"),
         "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "supervisor.children[0].watchdog" in line
    assert 'ready = "notify"' in line

    # The same config offered to a running daemon by a reload is refused, naming the key.
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "plain"
        command = {SLEEP}
    """)
    pid = daemon.wait_running("plain")
    assert daemon.config_path is not None
    daemon.config_path.write_text(textwrap.dedent(bad))
    with pytest.raises(FoundationError, match=r"invalid_config: .*supervisor\.children\[0\]\.watchdog"):
        daemon.request("reload")
    assert daemon.pid("plain") == pid
