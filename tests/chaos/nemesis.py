"""Nemeses: the faults a chaos round injects into a real foundationd and its processes.

    Nemesis.run(stop) ── every U(gap) seconds ──> one fault, chosen at random (seeded) from the enabled set
                                                   logged in the history as invoke/ok of f = "nemesis"
    Nemesis.heal()    ── SIGCONT whatever is still stopped; start foundationd again if it is down

One fault at a time: a SIGSTOP lasts its pause and is followed by its SIGCONT before the next fault. The waits
here are the schedule (how long a process stays stopped, how long the daemon stays dead), not synchronisation.

| name | fault |
|---|---|
| kill-agent / stop-agent | SIGKILL / SIGSTOP..SIGCONT (0.2-2.5 s) an agent: a sink, the coordinator or a task agent |
| stall-agent | SIGSTOP an agent for 11 s, past the broker's 10 s liveness limit (it is killed), then SIGCONT |
| kill-workflow / stop-workflow | the same for a running workflow's own process (``workflow-ID``) |
| kill-zygote / stop-zygote | the agent fork server (``daemon.zygote.pid``) |
| kill-guardian / stop-guardian | the guardian (``daemon.guardian.pid``) |
| kill-daemon | SIGKILL foundationd, wait 0-0.5 s, start it again on the same state and runtime directories |
| stop-daemon | SIGSTOP foundationd for 0.2-2 s, then SIGCONT |
| slow-consumer | a cast that makes a sink sleep 1-3 s in its handler (logged as a send like any other) |
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
from collections.abc import Callable
from typing import Any

from agents.testing import DaemonProcess
from ipc.control import ControlClient, ControlUnreachable
from ipc.errors import FoundationError
from tests.chaos.history import History

ALL = ("kill-agent", "stop-agent", "kill-workflow", "stop-workflow", "kill-zygote", "stop-zygote",
       "kill-guardian", "stop-guardian", "kill-daemon", "stop-daemon", "slow-consumer")
OPT_IN = ("stall-agent",)
# The default mix: the daemon's own death most often (the hardest case for the delivery promise).
WEIGHTS = {"kill-daemon": 3, "kill-agent": 2, "stop-agent": 2}


class Nemesis:
    def __init__(self, daemon: DaemonProcess, history: History, rng: random.Random, enabled: tuple[str, ...], *,
                 sinks: list[str], gap: tuple[float, float] = (0.3, 1.0)) -> None:
        unknown = set(enabled) - set(ALL) - set(OPT_IN)
        if unknown:
            raise ValueError(f"unknown nemesis: {', '.join(sorted(unknown))} (known: {', '.join(ALL + OPT_IN)})")
        self.daemon = daemon
        self.history = history
        self.rng = rng
        self.enabled = enabled
        self.sinks = sinks
        self.gap = gap
        self.stopped: set[int] = set()
        self.lock = threading.Lock()  # the workload's final phase and heal() must not race a fault
        self.slow_n = 0
        self.faults: dict[str, Callable[[], str | None]] = {
            "kill-agent": lambda: self._signal_one(self._agents(), signal.SIGKILL),
            "stop-agent": lambda: self._pause(self._agents(), 0.2, 2.5),
            "stall-agent": lambda: self._pause(self._agents(), 11.0, 11.0),
            "kill-workflow": lambda: self._signal_one(self._workflows(), signal.SIGKILL),
            "stop-workflow": lambda: self._pause(self._workflows(), 0.2, 2.5),
            "kill-zygote": lambda: self._signal_one(self._daemon_pid("zygote"), signal.SIGKILL),
            "stop-zygote": lambda: self._pause(self._daemon_pid("zygote"), 0.2, 2.5),
            "kill-guardian": lambda: self._signal_one(self._daemon_pid("guardian"), signal.SIGKILL),
            "stop-guardian": lambda: self._pause(self._daemon_pid("guardian"), 0.2, 2.5),
            "kill-daemon": self._kill_daemon,
            "stop-daemon": self._stop_daemon,
            "slow-consumer": self._slow,
        }

    # ---- the schedule ----

    def run(self, stop: threading.Event) -> None:
        names = list(self.enabled)
        weights = [WEIGHTS.get(name, 1) for name in names]
        while not stop.wait(self.rng.uniform(*self.gap)):
            name = self.rng.choices(names, weights)[0]
            with self.lock:
                self.history.invoke("nemesis", "nemesis", {"fault": name})
                try:
                    what = self.faults[name]()
                except (ControlUnreachable, FoundationError, OSError, TimeoutError) as exc:
                    self.history.fail("nemesis", "nemesis", {"fault": name, "error": str(exc)})
                    continue
                if what is None:
                    self.history.fail("nemesis", "nemesis", {"fault": name, "error": "no target"})
                else:
                    self.history.ok("nemesis", "nemesis", {"fault": name, "target": what})

    def heal(self) -> None:
        with self.lock:
            for pid in list(self.stopped):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
                self.stopped.discard(pid)
            proc = self.daemon.proc
            if proc is not None and proc.poll() is not None:
                self.daemon.start(wait=True)

    # ---- targets ----

    def _status(self) -> dict[str, Any]:
        with ControlClient(self.daemon.socket_path, timeout=5) as client:
            status: dict[str, Any] = client.request("status")
            return status

    def _agents(self) -> list[tuple[str, int]]:
        status = self._status()
        found = []
        todo = [status["tree"]]
        while todo:
            node = todo.pop()
            todo.extend(node.get("children", []))
            name = node["name"]
            running = node.get("pid") and node["state"] == "running"
            if node.get("agent") and running and not name.startswith("workflow-"):
                found.append((name, node["pid"]))
        return sorted(found)

    def _workflows(self) -> list[tuple[str, int]]:
        status = self._status()
        todo = [status["tree"]]
        while todo:
            node = todo.pop()
            if node["name"] == "workflows":
                return sorted((c["name"], c["pid"]) for c in node.get("children", []) if c.get("pid"))
            todo.extend(node.get("children", []))
        return []

    def _daemon_pid(self, which: str) -> list[tuple[str, int]]:
        info = self._status()["daemon"].get(which) or {}
        pid = info.get("pid")
        return [(which, pid)] if pid else []

    # ---- faults ----

    def _signal_one(self, targets: list[tuple[str, int]], sig: int) -> str | None:
        if not targets:
            return None
        name, pid = self.rng.choice(targets)
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return None
        return f"{name} (pid {pid})"

    def _pause(self, targets: list[tuple[str, int]], low: float, high: float) -> str | None:
        if not targets:
            return None
        name, pid = self.rng.choice(targets)
        pause = self.rng.uniform(low, high)
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            return None
        self.stopped.add(pid)
        threading.Event().wait(pause)  # the fault's length (schedule, not synchronisation)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        self.stopped.discard(pid)
        return f"{name} (pid {pid}) for {pause:.1f}s"

    def _kill_daemon(self) -> str:
        proc = self.daemon.proc
        assert proc is not None
        pid = proc.pid
        self.daemon.kill(signal.SIGKILL)
        proc.wait(timeout=30)
        down = self.rng.uniform(0.0, 0.5)
        threading.Event().wait(down)
        self.daemon.start(wait=True)
        return f"foundationd (pid {pid}), down {down:.2f}s"

    def _stop_daemon(self) -> str:
        proc = self.daemon.proc
        assert proc is not None
        pause = self.rng.uniform(0.2, 2.0)
        proc.send_signal(signal.SIGSTOP)
        self.stopped.add(proc.pid)
        threading.Event().wait(pause)
        proc.send_signal(signal.SIGCONT)
        self.stopped.discard(proc.pid)
        return f"foundationd (pid {proc.pid}) for {pause:.1f}s"

    def _slow(self) -> str | None:
        to = self.rng.choice(self.sinks)
        self.slow_n += 1
        value = {"to": to, "ch": "nemesis-slow", "n": self.slow_n, "producer": False}
        sleep = round(self.rng.uniform(1.0, 3.0), 2)
        self.history.invoke("nemesis-slow", "send", value)
        try:
            with ControlClient(self.daemon.socket_path, timeout=5) as client:
                result = client.request("send", name=to, body={"ch": "nemesis-slow", "n": self.slow_n, "sleep": sleep})
        except FoundationError as exc:
            self.history.fail("nemesis-slow", "send", {"error": exc.code.value})
            return None
        except ControlUnreachable as exc:
            self.history.info("nemesis-slow", "send", {"error": str(exc)})
            return None
        self.history.ok("nemesis-slow", "send", result)
        return f"{to} sleeps {sleep}s"
