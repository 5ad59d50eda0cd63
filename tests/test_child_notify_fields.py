"""The rest of sd_notify(3) for ``ready = "notify"`` children: EXTEND_TIMEOUT_USEC, WATCHDOG=trigger, WATCHDOG_USEC,
STOPPING=1, ERRNO= and EXIT_STATUS=, and values that do not parse. Real daemons, real children.

The child is tests/children/notify_steps.py: a script of steps (send a datagram, write a CLOCK_BOOTTIME stamp, wait
for a file the test creates, exit), each logged as ``name | step: ...`` once done.

Where a test shows that something did *not* happen by a deadline, it waits for the clock to pass the deadline
(``outlive``), with a margin of twice the timeout, or for a reference event that comes later than the deadline.
"""

from __future__ import annotations

import json
import re
import signal
import sys

import psutil
import pytest
from helpers import CHILDREN, SLEEP, boottime, in_log, read_stamp

from agents.testing import wait_for
from daemon.shell.child_notify import USEC_MAX, parse_uint


def steps(*args: object) -> str:
    """A TOML command array running tests/children/notify_steps.py with these steps."""
    return json.dumps([sys.executable, str(CHILDREN / "notify_steps.py"), *map(str, args)])


def outlive(instant: float, seconds: float) -> None:
    """Wait until ``seconds`` have passed since ``instant`` (CLOCK_BOOTTIME): the condition is time itself."""
    wait_for(lambda: boottime() >= instant + seconds, timeout=seconds + 10, what=f"{seconds}s after {instant}")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# ---- EXTEND_TIMEOUT_USEC while starting ----


def test_extend_timeout_lets_a_start_run_past_start_timeout(start_daemon, tmp_path) -> None:
    began, gate = tmp_path / "began", tmp_path / "go"
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "svc"
        command = {steps(f"stamp:{began}", "send:EXTEND_TIMEOUT_USEC=30000000", f"take:{gate}",
                         "send:READY=1")}
        ready = "notify"
        start_timeout = 1.0
        [[supervisor.children]]
        name = "next"
        command = {SLEEP}
    """)
    in_log(daemon, "svc | step: send:EXTEND_TIMEOUT_USEC=30000000")
    pid = daemon.pid("svc")
    outlive(read_stamp(began), 2.0)  # twice its start_timeout, counted from after its spawn
    node = daemon.node("svc")
    assert (node["state"], node["pid"]) == ("starting", pid)
    assert daemon.node("next")["pid"] is None  # the sibling still waits for READY=1
    assert "was not ready within" not in daemon.log()
    gate.write_text("")
    daemon.wait_running("next")
    assert daemon.wait_running("svc") == pid


def test_an_extended_start_runs_out_at_the_last_deadline_the_child_set(start_daemon, tmp_path) -> None:
    """Each EXTEND_TIMEOUT_USEC counts from when it is sent: the second one moves the deadline again."""
    first, second = tmp_path / "first", tmp_path / "second"
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "svc"
        command = {steps(f"stamp:{first}", "send:EXTEND_TIMEOUT_USEC=1500000", "sleep:0.5",
                         f"stamp:{second}", "send:EXTEND_TIMEOUT_USEC=1500000")}
        ready = "notify"
        start_timeout = 1.0
        [[supervisor.children]]
        name = "next"
        command = {SLEEP}
    """, wait=False)
    daemon.expect_exit(1)  # the root fails, and the daemon with it: what the test is about
    assert daemon.wait_exit() == 1  # a start that fails at boot fails the root, as without an extension
    log = daemon.log()
    found = re.search(r"svc was not ready within ([0-9.]+)s \(start_timeout 1\.0s, extended by the child\); "
                      r"killing it", log)
    assert found, log
    # The daemon measures from the spawn, before the child's first stamp; the deadline is the second message + 1.5.
    needed = read_stamp(second) - read_stamp(first) + 1.5
    assert float(found.group(1)) >= needed - 0.01, (found.group(0), needed)
    assert "started next" not in log


# ---- EXTEND_TIMEOUT_USEC while stopping ----


@pytest.mark.parametrize("stops_in_time", [True, False])
def test_extend_timeout_while_stopping_moves_the_sigkill(start_daemon, tmp_path, stops_in_time: bool) -> None:
    """The child pings its 0.5 s watchdog until SIGTERM, then stops pinging: a stop is not watched by it (as under
    systemd), only by the SIGKILL deadline the child extended."""
    termed, gate = tmp_path / "termed", tmp_path / "done"
    extend = 30_000_000 if stops_in_time else 1_500_000
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "svc"
        command = {steps("send:READY=1", "pings:0.1", "--on-term", f"stamp:{termed}",
                         f"send:EXTEND_TIMEOUT_USEC={extend}", f"take:{gate}")}
        ready = "notify"
        shutdown = 0.5
        watchdog = 0.5
    """)
    pid = daemon.wait_running("svc")
    daemon.kill(signal.SIGTERM)
    in_log(daemon, f"svc | term: send:EXTEND_TIMEOUT_USEC={extend}")
    if stops_in_time:
        outlive(read_stamp(termed), 1.0)  # twice its shutdown time
        assert alive(pid)
        assert daemon.node("svc")["state"] == "stopping"  # and the daemon answers meanwhile
        assert "did not stop within" not in daemon.log()
        assert "sent no WATCHDOG=1" not in daemon.log()
        gate.write_text("")
        assert daemon.wait_exit() == 0
        assert "stopped svc (exited with status 0)" in daemon.log()
        assert "SIGKILL" not in daemon.log()
    else:
        assert daemon.wait_exit() == 0
        log = daemon.log()
        found = re.search(r"svc did not stop within ([0-9.]+)s \(shutdown 0\.5s, extended by the child\); "
                          r"sending SIGKILL", log)
        assert found, log
        assert float(found.group(1)) >= 1.5 - 0.01
        assert "stopped svc (killed by SIGKILL)" in log
        assert "sent no WATCHDOG=1" not in log


# ---- WATCHDOG=trigger and WATCHDOG_USEC= ----


@pytest.mark.parametrize("watchdog", ["", "watchdog = 30"])
def test_watchdog_trigger_kills_and_restarts_the_child(start_daemon, tmp_path, watchdog: str) -> None:
    gate = tmp_path / "trigger"
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "svc"
        command = {steps("send:READY=1", f"take:{gate}", "send:WATCHDOG=trigger")}
        ready = "notify"
        {watchdog}
    """)
    first = daemon.wait_running("svc")
    gate.write_text("")
    in_log(daemon, "svc watchdog triggered; killing it (requested by the child)")
    second = daemon.wait_running("svc", not_pid=first)
    node = daemon.node("svc")
    assert node["restarts"] == 1
    assert "SIGKILL" in node["last_exit"]
    assert daemon.pid("svc") == second  # the new run waits for the next trigger
    assert daemon.log().count("watchdog triggered") == 1


def test_watchdog_usec_sets_the_childs_own_interval(start_daemon, tmp_path) -> None:
    gate = tmp_path / "go"
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "plain"
        command = {steps("send:READY=1", "send:WATCHDOG_USEC=100000")}
        ready = "notify"
        [[supervisor.children]]
        name = "off"
        command = {steps("send:READY=1", "send:WATCHDOG_USEC=0")}
        ready = "notify"
        watchdog = 0.5
        [[supervisor.children]]
        name = "svc"
        command = {steps("send:READY=1", f"take:{gate}", "send:WATCHDOG_USEC=1000000")}
        ready = "notify"
        watchdog = 30
    """)
    pids = {name: daemon.wait_running(name) for name in ("plain", "off", "svc")}
    in_log(daemon, "plain | step: send:WATCHDOG_USEC=100000")
    in_log(daemon, "off | step: send:WATCHDOG_USEC=0")
    in_log(daemon, "off set its watchdog to off (WATCHDOG_USEC=0)")
    # svc shortens its 30 s watchdog to 1 s and never pings: killed about 1 s after its message, and restarted.
    gate.write_text("")
    in_log(daemon, "svc set its watchdog to 1s (WATCHDOG_USEC=1000000)")
    in_log(daemon, "svc sent no WATCHDOG=1 for 1s; killing it")
    assert daemon.wait_running("svc", not_pid=pids["svc"])
    # The reference: svc's message came after the other two (one socket, in order), and its 1 s ran out after both
    # plain's would-be 0.1 s and off's 0.5 s from READY=1. plain has no watchdog, off turned its own off.
    assert daemon.pid("plain") == pids["plain"]
    assert daemon.pid("off") == pids["off"]
    assert daemon.log().count("sent no WATCHDOG=1") == 1


# ---- STOPPING=1, ERRNO=, EXIT_STATUS= ----


def test_stopping_errno_and_exit_status_are_logged_and_shown(start_daemon, tmp_path) -> None:
    said, gate = tmp_path / "say", tmp_path / "exit"
    command = steps("send:READY=1\\nSTATUS=serving", f"take:{said}",
                    "send:STATUS=giving up\\nERRNO=2\\nEXIT_STATUS=3\\nSTOPPING=1", f"take:{gate}", "exit:3")
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "svc"
        command = {command}
        ready = "notify"
        restart = "temporary"
    """)
    daemon.wait_running("svc")
    assert "errno" not in daemon.node("svc")
    said.write_text("")
    node = wait_for(lambda: (n := daemon.node("svc")).get("errno") is not None and n, what="ERRNO= in status")
    assert (node["status"], node["errno"], node["exit_status"]) == ("giving up", 2, 3)
    in_log(daemon, "svc says it is stopping (STOPPING=1)")
    gate.write_text("")
    node = wait_for(lambda: (n := daemon.node("svc"))["state"] == "failed" and n, what="svc down")
    assert node["last_exit"] == "exited with status 3"
    # STATUS= goes with the process; ERRNO= and EXIT_STATUS= stay, like last_exit, until the next start.
    assert "status" not in node
    assert (node["errno"], node["exit_status"]) == (2, 3)
    daemon.request("start", name="svc")
    node = daemon.node("svc")
    assert node["state"] == "running"
    assert "errno" not in node
    assert "exit_status" not in node


# ---- values that do not parse ----


def test_malformed_values_are_ignored_with_a_warning(start_daemon, tmp_path) -> None:
    gate = tmp_path / "go"
    bad = {
        "EXTEND_TIMEOUT_USEC": ["soon", "-5", "99999999999999999999999", "9999999999999999999", "1e6", " 5"],
        "WATCHDOG_USEC": ["-1", "٣", "0x10", ""],
        "ERRNO": ["99999", "ENOENT"],
        "EXIT_STATUS": ["256", "+3"],
    }
    datagrams = [f"send:{key}={value}" for key, values in bad.items() for value in values]
    command = steps(*datagrams, "send:READY=1", f"take:{gate}", "send:WATCHDOG=1\\nSTATUS=still here")
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "svc"
        command = {command}
        ready = "notify"
        start_timeout = 5
        watchdog = 30
        [[supervisor.children]]
        name = "next"
        command = {SLEEP}
    """)
    pid = daemon.wait_running("svc")
    daemon.wait_running("next")
    for key, values in bad.items():
        for value in values:
            in_log(daemon, f"svc sent {key}={value!r}: not a whole number from 0 to ")
    node = daemon.node("svc")
    assert "errno" not in node
    assert "exit_status" not in node
    # Nothing broke: the loop answers, and the child's later messages are still heard.
    gate.write_text("")
    wait_for(lambda: daemon.node("svc").get("status") == "still here", what="a later STATUS=")
    assert daemon.pid("svc") == pid
    assert "Traceback" not in daemon.log()
    assert "set its watchdog" not in daemon.log()


@pytest.mark.parametrize(
    ("value", "maximum", "expected"),
    [("0", 255, 0), ("255", 255, 255), ("007", 255, 7), ("256", 255, None), ("", 255, None), ("-1", 255, None),
     ("+1", 255, None), (" 1", 255, None), ("1_0", 255, None), ("1.5", 255, None), ("٣", 255, None),
     (str(USEC_MAX), USEC_MAX, USEC_MAX), (str(USEC_MAX + 1), USEC_MAX, None), ("9" * 21, 10**30, None)],
)
def test_parse_uint_takes_plain_decimal_digits_within_range(value: str, maximum: int, expected: int | None) -> None:
    assert parse_uint(value, maximum) == expected


def test_what_a_child_says_just_before_it_exits_is_kept(start_daemon) -> None:
    """No gate before the exit: the datagram and the exit arrive together. The daemon drains the notify socket
    before it reaps (ProcessShell.before_reap), so the datagram is heard whichever the loop sees first; here
    epoll's order usually has it first anyway, so this checks the behaviour, not that ordering."""
    command = steps("send:READY=1", "send:ERRNO=5\\nEXIT_STATUS=4", "exit:4")
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "svc"
        command = {command}
        ready = "notify"
        restart = "temporary"
        [[supervisor.children]]
        name = "next"
        command = {SLEEP}
    """)
    daemon.wait_running("next")
    node = wait_for(lambda: (n := daemon.node("svc"))["pid"] is None and n, what="svc exited")
    assert (node.get("errno"), node.get("exit_status")) == (5, 4)
