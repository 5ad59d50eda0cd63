"""foundationd facing systemd: sd_notify(3) messages received on a real datagram socket standing in for systemd's.

The socket is bound in the test's temporary directory and given to the daemon process alone as NOTIFY_SOCKET
(with WATCHDOG_USEC / WATCHDOG_PID where a test needs them); a thread records every datagram with its arrival
time on CLOCK_BOOTTIME, the clock /proc/PID/stat counts process start times in.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from helpers import SLEEP, boottime, read_stamp, rewrite, script, started_at

from agents.testing import DaemonProcess, WaitTimeout, wait_for
from daemon.shell.notify import Notifier

SD_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class NotifyListener:
    """systemd's end of NOTIFY_SOCKET: records (arrival on CLOCK_BOOTTIME, {KEY: VALUE}) per datagram."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self._messages: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self._messages.append((boottime(), fields))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    @property
    def messages(self) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return list(self._messages)

    def with_key(self, key: str, value: str | None = None) -> list[tuple[float, dict[str, str]]]:
        return [(t, m) for t, m in self.messages if key in m and (value is None or m[key] == value)]

    def keys(self) -> list[str]:
        """The sequence of message kinds, ignoring WATCHDOG=1 and STATUS= (to check orders)."""
        out = []
        for _, fields in self.messages:
            out.extend(f"{k}={v}" for k, v in fields.items() if k not in ("WATCHDOG", "STATUS", "MONOTONIC_USEC"))
        return out

    def wait_count(self, key: str, value: str | None, count: int, timeout: float = 10) -> list:
        try:
            return wait_for(lambda: len(found := self.with_key(key, value)) >= count and found, timeout=timeout)
        except WaitTimeout:
            raise WaitTimeout(f"{count} x {key}={value} not received; got {self.messages}") from None


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifyListener]:
    sd = NotifyListener(tmp_path / "systemd-notify.sock")
    yield sd
    sd.close()


@pytest.fixture
def start_with_env(start_daemon, monkeypatch) -> Callable[..., DaemonProcess]:
    """Start a daemon whose own environment (only) has the sd_notify variables given; the others are unset."""

    def start(config: str, wait: bool = True, **env: str) -> DaemonProcess:
        with monkeypatch.context() as m:
            for key in SD_ENV:
                if key in env:
                    m.setenv(key, env[key])
                else:
                    m.delenv(key, raising=False)
            return start_daemon(config, wait=wait)

    return start


# ---- READY=1 and STATUS= ----


def test_ready_only_after_every_child_started_and_status_kept_current(start_with_env, listener, tmp_path) -> None:
    stamp = tmp_path / "slow.ready"
    daemon = start_with_env(f"""
        [[supervisor.children]]
        name = "slow"
        command = {script("sd_child.py", "--ready-after", 0.6, "--stamp", stamp)}
        ready = "notify"
        [[supervisor.children]]
        name = "after"
        command = {SLEEP}
    """, NOTIFY_SOCKET=str(listener.path))
    [(ready_at, _)] = listener.wait_count("READY", "1", 1)
    slow_ready = read_stamp(stamp)
    after_pid = daemon.wait_running("after")
    # READY=1 came after the slow child reported ready, and after the child behind it was created.
    assert ready_at >= slow_ready
    assert ready_at >= started_at(after_pid)
    statuses = [m["STATUS"] for _, m in listener.with_key("STATUS")]
    assert statuses[0] == "0/2 children running, 0 restarts in the last minute"
    first_ready_index = next(i for i, (_, m) in enumerate(listener.messages) if m.get("READY") == "1")
    before_ready = [m["STATUS"] for _, m in listener.messages[:first_ready_index] if "STATUS" in m]
    assert all(not s.startswith("2/2") for s in before_ready), before_ready
    listener.wait_count("STATUS", "2/2 children running, 0 restarts in the last minute", 1)

    # STATUS follows the tree: a crash and its restart show up in it.
    os.kill(after_pid, signal.SIGKILL)
    daemon.wait_running("after", not_pid=after_pid)
    listener.wait_count("STATUS", "2/2 children running, 1 restarts in the last minute", 1)
    assert len(listener.with_key("READY", "1")) == 1  # READY=1 once: a restart is not a new start-up


# ---- WATCHDOG=1 ----


def test_watchdog_pings_at_half_of_watchdog_usec(start_with_env, listener) -> None:
    start_with_env(f"""
        [[supervisor.children]]
        name = "plain"
        command = {SLEEP}
    """, NOTIFY_SOCKET=str(listener.path), WATCHDOG_USEC="400000")
    pings = listener.wait_count("WATCHDOG", "1", 9)
    times = [t for t, _ in pings]
    rate = (len(times) - 1) / (times[-1] - times[0])  # expected: one per 0.2 s, 5 per second
    assert 3 <= rate <= 8, f"{rate:.2f} pings/s from {times}"


def test_watchdog_pid_of_another_process_disables_pings(start_with_env, listener, tmp_path) -> None:
    config = f"""
        [[supervisor.children]]
        name = "plain"
        command = {SLEEP}
    """
    start_with_env(config, NOTIFY_SOCKET=str(listener.path), WATCHDOG_USEC="100000", WATCHDOG_PID=str(os.getpid()))
    # A second daemon, started later, whose watchdog is meant for it: the window in which the first must stay quiet.
    control = NotifyListener(tmp_path / "control-notify.sock")
    try:
        start_with_env(config, NOTIFY_SOCKET=str(control.path), WATCHDOG_USEC="100000")
        control.wait_count("WATCHDOG", "1", 8)
        listener.wait_count("READY", "1", 1)
        assert listener.with_key("WATCHDOG") == []
    finally:
        control.close()


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "400000"}, 0.2),
        ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": str(os.getpid())}, 0.2),
        ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_from_the_environment(env: dict[str, str], interval: float | None) -> None:
    assert Notifier(env).watchdog_interval == interval


# ---- RELOADING=1 ... READY=1 and STOPPING=1 ----


def test_reloading_then_ready_on_the_verb_and_on_sighup(start_with_env, listener, tmp_path) -> None:
    stamp = tmp_path / "svc.ready"
    daemon = start_with_env(f"""
        [[supervisor.children]]
        name = "svc"
        command = {script("sd_child.py")}
        ready = "notify"
    """, NOTIFY_SOCKET=str(listener.path))
    listener.wait_count("READY", "1", 1)
    old_pid = daemon.wait_running("svc")

    # The verb: the replaced child is slow to be ready; READY=1 waits for it.
    rewrite(daemon, f"""
        [[supervisor.children]]
        name = "svc"
        command = {script("sd_child.py", "--ready-after", 0.4, "--stamp", stamp)}
        ready = "notify"
    """)
    before = time.monotonic_ns() // 1000
    assert daemon.request("reload") == {"removed": [], "updated": [], "restarted": ["svc"],
        "added": [], "reordered": []}
    after = time.monotonic_ns() // 1000
    [(_, reloading)] = listener.wait_count("RELOADING", "1", 1)
    assert before <= int(reloading["MONOTONIC_USEC"]) <= after  # CLOCK_MONOTONIC, as sd_notify(3) asks
    [_, (ready_at, _)] = listener.wait_count("READY", "1", 2)
    assert ready_at >= read_stamp(stamp)
    assert daemon.wait_running("svc") != old_pid
    assert listener.keys() == ["READY=1", "RELOADING=1", "READY=1"]

    # SIGHUP: the same, for an added child.
    rewrite(daemon, f"""
        [[supervisor.children]]
        name = "svc"
        command = {script("sd_child.py", "--ready-after", 0.4, "--stamp", stamp)}
        ready = "notify"
        [[supervisor.children]]
        name = "added"
        command = {SLEEP}
    """)
    daemon.kill(signal.SIGHUP)
    listener.wait_count("READY", "1", 3)
    assert listener.keys() == ["READY=1", "RELOADING=1", "READY=1", "RELOADING=1", "READY=1"]
    daemon.wait_running("added")

    # An invalid config changes nothing, and systemd still hears that the reload is over.
    rewrite(daemon, "[supervisor\n")
    with pytest.raises(Exception, match="invalid_config"):
        daemon.request("reload")
    listener.wait_count("READY", "1", 4)
    assert listener.keys()[-2:] == ["RELOADING=1", "READY=1"]


@pytest.mark.parametrize("how", ["sigterm", "shutdown verb"])
def test_stopping_when_an_orderly_stop_begins(start_with_env, listener, how: str) -> None:
    daemon = start_with_env(f"""
        [[supervisor.children]]
        name = "plain"
        command = {SLEEP}
    """, NOTIFY_SOCKET=str(listener.path))
    listener.wait_count("READY", "1", 1)
    if how == "sigterm":
        daemon.kill(signal.SIGTERM)
    else:
        daemon.request("shutdown")
    assert daemon.wait_exit() == 0
    listener.wait_count("STOPPING", "1", 1)
    assert listener.keys() == ["READY=1", "STOPPING=1"]


# ---- without systemd, and what children see ----


@pytest.mark.parametrize("notify_socket", [None, "missing"])
def test_without_a_notify_socket_nothing_breaks(start_with_env, tmp_path, notify_socket: str | None) -> None:
    env = {"WATCHDOG_USEC": "100000"}
    if notify_socket is not None:
        env["NOTIFY_SOCKET"] = str(tmp_path / "nobody-listens.sock")
    config = f"""
        [[supervisor.children]]
        name = "plain"
        command = {SLEEP}
    """
    daemon = start_with_env(config, **env)
    pid = daemon.wait_running("plain")
    rewrite(daemon, config + f"""
        [[supervisor.children]]
        name = "added"
        command = {SLEEP}
    """)
    assert daemon.request("reload")["added"] == ["added"]
    rewrite(daemon, config)
    daemon.kill(signal.SIGHUP)
    wait_for(lambda: daemon.log().count("reloaded:") == 2, what="the SIGHUP reload")
    assert daemon.pid("plain") == pid
    daemon.kill(signal.SIGTERM)
    assert daemon.wait_exit() == 0


def test_children_do_not_inherit_the_daemons_notify_environment(start_with_env, listener) -> None:
    daemon = start_with_env(f"""
        [[supervisor.children]]
        name = "plain"
        command = {SLEEP}
        [[supervisor.children]]
        name = "svc"
        command = {script("sd_child.py", "--ping-every", "auto")}
        ready = "notify"
        watchdog = 2.5
    """, NOTIFY_SOCKET=str(listener.path), WATCHDOG_USEC="400000", WATCHDOG_PID="1")
    plain = psutil.Process(daemon.wait_running("plain")).environ()
    assert not set(plain) & set(SD_ENV), plain
    # A notify child gets the daemon's own socket for children, and its own watchdog, never the daemon's.
    svc = psutil.Process(daemon.wait_running("svc")).environ()
    assert svc["NOTIFY_SOCKET"] == str(daemon.runtime_dir / "notify.sock")
    assert svc["WATCHDOG_USEC"] == "2500000"
    assert "WATCHDOG_PID" not in svc


def test_no_ready_after_stopping_when_a_shutdown_overtakes_a_reload(start_with_env, listener, tmp_path) -> None:
    gate = tmp_path / "never"
    daemon = start_with_env(f"""
        [[supervisor.children]]
        name = "svc"
        command = {script("sd_child.py")}
        ready = "notify"
    """, NOTIFY_SOCKET=str(listener.path))
    listener.wait_count("READY", "1", 1)
    # The reload replaces svc with a child that waits for a file that never comes: the reload is still
    # under way when SIGTERM arrives, and the shutdown stops the new child.
    rewrite(daemon, f"""
        [[supervisor.children]]
        name = "svc"
        command = {script("sd_child.py", "--ready-when", gate)}
        ready = "notify"
    """)
    daemon.kill(signal.SIGHUP)
    listener.wait_count("RELOADING", "1", 1)
    wait_for(lambda: daemon.node("svc").get("status") == "warming up", what="the new svc starting")
    daemon.kill(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    listener.wait_count("STOPPING", "1", 1)
    assert listener.keys() == ["READY=1", "RELOADING=1", "STOPPING=1"]
    # The starting child was stopped by the shutdown, not left to run out its start_timeout.
    assert "was not ready within" not in daemon.log()
    assert daemon.log().count("stopped svc (killed by SIGTERM)") == 2


@pytest.mark.parametrize("config_ok", [True, False])
def test_a_reload_during_start_up_sends_no_early_ready(start_with_env, listener, tmp_path, config_ok: bool) -> None:
    gate = tmp_path / "go"
    config = f"""
        [[supervisor.children]]
        name = "svc"
        command = {script("sd_child.py", "--ready-when", gate)}
        ready = "notify"
        [[supervisor.children]]
        name = "after"
        command = {SLEEP}
    """
    daemon = start_with_env(config, NOTIFY_SOCKET=str(listener.path))
    wait_for(lambda: daemon.node("svc").get("status") == "warming up", what="svc starting")
    if not config_ok:
        rewrite(daemon, "[supervisor\n")
    daemon.kill(signal.SIGHUP)
    wait_for(lambda: "reloaded:" in daemon.log() or "reload refused" in daemon.log(), what="the reload done")
    assert daemon.node("after")["pid"] is None  # still starting up
    assert listener.with_key("READY") == []  # systemd must not hear READY=1 before the tree is up
    gate.write_text("")
    listener.wait_count("READY", "1", 1)
    daemon.wait_running("after")


def test_a_notify_socket_nobody_reads_does_not_stall_the_daemon(start_with_env, tmp_path) -> None:
    """sd_notify(3) is fire and forget: a full receive queue must not block the daemon's loop."""
    config = f"""
        [[supervisor.children]]
        name = "plain"
        command = {SLEEP}
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as deaf:  # bound, never read
        deaf.bind(str(tmp_path / "deaf.sock"))
        daemon = start_with_env(config, NOTIFY_SOCKET=str(tmp_path / "deaf.sock"), WATCHDOG_USEC="10000")
        # A second daemon on the same cadence, heard: once it has sent 30 pings, the first has tried as many,
        # far more than the queue of an unread socket holds (net.unix.max_dgram_qlen, 10 by default).
        reference = NotifyListener(tmp_path / "reference.sock")
        try:
            start_with_env(config, NOTIFY_SOCKET=str(reference.path), WATCHDOG_USEC="10000")
            reference.wait_count("WATCHDOG", "1", 30)
        finally:
            reference.close()
        with daemon.client(timeout=5) as client:
            assert client.request("status")["tree"]["state"] == "running"
        pid = daemon.pid("plain")
        os.kill(pid, signal.SIGKILL)
        daemon.wait_running("plain", not_pid=pid)
        daemon.kill(signal.SIGTERM)
        assert daemon.wait_exit(timeout=10) == 0
