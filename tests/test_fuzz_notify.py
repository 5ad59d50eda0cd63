"""Fuzzing the children's sd_notify socket (daemon/shell/child_notify.py) on a real foundationd: random datagrams
and ``KEY=VALUE`` lines of every field with odd values (signs, spaces, other scripts' digits, overflows, empty),
oversized datagrams, and descriptors passed along (SCM_RIGHTS). As root the test sends them with the credentials of
a ``ready = "notify"`` child (SCM_CREDENTIALS may name any pid then), so that they reach the parser as the child's
own; otherwise with its own, and only the sender check is exercised. The daemon never dies, keeps answering, does
not keep the descriptors, and its RSS stays bounded.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import script
from hypothesis import given
from hypothesis import strategies as st

from agents.testing import DaemonProcess
from tests.chaos.fuzzing import LONG, fuzz_settings, rss

pytestmark = [pytest.mark.timeout(0 if LONG else 120), pytest.mark.slow]

KEYS = ["READY", "STATUS", "ERRNO", "EXIT_STATUS", "EXTEND_TIMEOUT_USEC", "WATCHDOG", "WATCHDOG_USEC", "STOPPING",
        "MAINPID", "RELOADING", "FDSTORE", "BUSERROR", "MONOTONIC_USEC", ""]
ODD = st.sampled_from(["1", "0", "-1", "+5", " 5", "5 ", "1_000", "\u0661\u0662", "99999999999999999999999",
                       "18446744073709551616", "", "trigger", "1\x00", "0x10", "1e3", "4095", "4096", "255", "256"])
RSS_GROWTH = 32 << 20


def notify_config() -> str:
    return f"""
[supervisor]
intensity = 1000
period = 1
[[supervisor.children]]
name = "sd"
command = {script("notify_child.py", 0, 0)}
ready = "notify"
watchdog = 30
start_timeout = 30
"""


lines = st.lists(st.tuples(st.sampled_from(KEYS) | st.text(max_size=6), ODD | st.text(max_size=30)), max_size=6).map(
    lambda kvs: "\n".join(f"{k}={v}" for k, v in kvs).encode("utf-8", "surrogatepass"))
datagrams = lines | st.binary(max_size=600) | st.integers(4000, 70000).map(lambda n: b"STATUS=" + b"x" * n)


class Sender:
    def __init__(self, d: DaemonProcess) -> None:
        self.d = d
        self.path = str(d.runtime_dir / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.forge = os.geteuid() == 0

    def send(self, data: bytes, fds: list[int] | None = None) -> None:
        anc: list[tuple[int, int, bytes]] = []
        pid = self.d.pid("sd") if self.forge else None
        if pid is not None:
            anc.append((socket.SOL_SOCKET, socket.SCM_CREDENTIALS, struct.pack("3i", pid, 0, 0)))
        if fds:
            anc.append((socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds)))
        try:
            self.sock.sendmsg([data], anc, 0, self.path)
        except (OSError, ValueError):  # too long for a datagram, or an unsendable control message: not delivered
            return


@pytest.fixture
def sender(start_daemon: Any) -> Iterator[Sender]:
    d: DaemonProcess = start_daemon(notify_config())
    d.wait_running("sd", timeout=30)
    assert d.proc is not None
    before, fds = rss(d.proc.pid), len(os.listdir(f"/proc/{d.proc.pid}/fd"))
    s = Sender(d)
    yield s
    s.sock.close()
    assert d.proc.poll() is None, d.log()[-3000:]
    assert d.status()["tree"]["name"] == "root"
    assert rss(d.proc.pid) - before < RSS_GROWTH
    assert len(os.listdir(f"/proc/{d.proc.pid}/fd")) <= fds + 8  # nothing passed to it is kept


@fuzz_settings(200)
@given(st.lists(datagrams, min_size=1, max_size=5))
def test_any_datagrams_from_a_notify_child(sender: Sender, batch: list[bytes]) -> None:
    for data in batch:
        sender.send(data)
    assert sender.d.request("pid") is not None  # the loop is alive and has read them (one loop, in order)
    assert sender.d.proc is not None
    assert sender.d.proc.poll() is None


def test_descriptors_sent_with_a_datagram_are_not_kept(sender: Sender, tmp_path: Path) -> None:
    d = sender.d
    assert d.proc is not None
    before = len(os.listdir(f"/proc/{d.proc.pid}/fd"))
    with open(tmp_path / "f", "w") as f:
        for _ in range(200):
            sender.send(b"STATUS=fd", [f.fileno(), f.fileno(), f.fileno()])
    assert d.request("pid") is not None
    assert len(os.listdir(f"/proc/{d.proc.pid}/fd")) <= before + 2
