"""What several of Foundation's own test files need alike: paths, the usual sleeper, foundationctl, small waits.

One copy here, imported as ``from helpers import ...`` (like ``fakeshell``), so that a change of, say, how
foundationctl is run reaches every test at once. What users' tests need too lives in ``agents.testing``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from agents.testing import DaemonProcess, wait_for
from daemon.shell.process import ProcessShell

REPO = Path(__file__).resolve().parents[1]
CHILDREN = Path(__file__).parent / "children"
SLEEP = json.dumps(["sleep", "1000"])  # a TOML command array: a child that runs until it is stopped
FOUNDATIONCTL = str(Path(sys.executable).with_name("foundationctl"))


def script(name: str, *args: object) -> str:
    """A TOML command array running tests/children/NAME with this interpreter."""
    return json.dumps([sys.executable, str(CHILDREN / name), *map(str, args)])


# ---- foundationctl as a user runs it ----


def ctl_env() -> dict[str, str]:
    """The environment without the variables that would point foundationctl at a daemon other than the one named."""
    return {k: v for k, v in os.environ.items() if k not in ("FOUNDATION_RUNTIME_DIR", "RUNTIME_DIRECTORY")}


def ctl(daemon: DaemonProcess | Path | str, *args: str, stdin: str | None = None, timeout: float = 60
        ) -> subprocess.CompletedProcess[str]:
    """Run ``foundationctl`` against a daemon (or a runtime directory) and capture what it says."""
    runtime_dir = daemon.runtime_dir if isinstance(daemon, DaemonProcess) else daemon
    return subprocess.run([FOUNDATIONCTL, "--runtime-dir", str(runtime_dir), *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout, check=False, env=ctl_env())


def ctl_popen(daemon: DaemonProcess, *args: str) -> subprocess.Popen[str]:
    """foundationctl in the background, with unbuffered output so that its ids can be read as they come."""
    env = {**ctl_env(), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([FOUNDATIONCTL, "--runtime-dir", str(daemon.runtime_dir), *args], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


# ---- a running daemon ----


def in_log(daemon: DaemonProcess, text: str, count: int = 1, timeout: float = 10) -> None:
    wait_for(lambda: daemon.log().count(text) >= count, timeout=timeout, what=f"{text!r} in the daemon log")


def rewrite(daemon: DaemonProcess, config: str) -> None:
    """Replace the daemon's config file (the next reload reads it)."""
    assert daemon.config_path is not None
    daemon.config_path.write_text(textwrap.dedent(config))


def children_of(daemon: DaemonProcess, supervisor: str) -> list[str]:
    return [child["name"] for child in daemon.node(supervisor)["children"]]


def get(daemon: DaemonProcess, name: str, timeout: float = 5.0) -> Any:
    """The reply of agent ``name`` to ``{"get": true}`` (the counters of the tests answer with their state)."""
    return daemon.request("call", name=name, body={"get": True}, timeout=timeout)["reply"]


def settled(daemon: DaemonProcess, name: str, timeout: float = 60) -> Any:
    """Wait until ``name`` has finished every message in its mailbox, then return its state."""

    def idle() -> bool:
        stats = daemon.status()["broker"]
        return name not in stats["mailboxes"] and name in stats["connected"]

    wait_for(idle, timeout=timeout, interval=0.05, what=f"{name}'s mailbox to drain")
    return wait_for(lambda: get(daemon, name), timeout=10, what=f"{name} to answer")


# ---- time as the children see it ----


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def started_at(pid: int) -> float:
    """When the process was created, in CLOCK_BOOTTIME seconds (truncated to a clock tick)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")


def read_stamp(path: Path) -> float:
    """The CLOCK_BOOTTIME instant a child wrote to ``path``, once it is there."""
    return float(wait_for(lambda: path.exists() and path.read_text(), what=f"a stamp in {path}"))


# ---- the shell without a loop ----


class RealProcesses:
    """Real processes standing in for what a shell component launches (a guardian, a zygote) in its unit tests:
    ``script`` is what they run; what the component kills is recorded, and ``reap`` ends them all."""

    def __init__(self, script: str) -> None:
        self.script = script
        self.procs: list[subprocess.Popen[bytes]] = []
        self.killed: list[int] = []

    def started(self, proc: subprocess.Popen[bytes]) -> int:
        self.procs.append(proc)
        return proc.pid

    def kill(self, pid: int) -> None:
        self.killed.append(pid)
        for proc in self.procs:
            if proc.pid == pid:
                proc.kill()

    def reap(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(timeout=30)


def shell() -> ProcessShell:
    """A ProcessShell whose loop callbacks do nothing: for tests of how it would spawn, not of spawning."""
    return ProcessShell(lambda fd, cb: None, lambda fd: None, lambda ev: None, lambda name, stream, lines: None)



# ---- idle cost ----


def context_switches(pid: int) -> int:
    """Every context switch of every thread of ``pid`` so far (a sleeping process makes none)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(line.split()[1])
    return total


def wake_ups_in_a_second(pid: int) -> int:
    """Context switches of ``pid`` in one second, counted once it has gone to sleep: on a loaded machine a daemon
    may still be finishing its last turn (and be preempted) when the caller's last request returns."""
    last, still = [context_switches(pid)], [0]

    def asleep() -> bool:  # the same count twice in a row, the second time after an interval
        now = context_switches(pid)
        still[0] = still[0] + 1 if now == last[0] else 0
        last[0] = now
        return still[0] >= 2

    wait_for(asleep, interval=0.05, what=f"pid {pid} asleep")
    start = context_switches(pid)
    time.sleep(1.0)  # the window measured, not a wait for anything: an idle daemon must not run in it
    return context_switches(pid) - start
