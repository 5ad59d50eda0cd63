"""Testing helpers for Foundation users and for Foundation's own suite.

* ``wait_for(predicate, timeout)``: poll a condition with a deadline instead of sleeping and hoping.
* ``DaemonProcess``: a real ``foundationd`` in a temporary directory, with a control client and a
  teardown that fails loudly if any process it started is left behind. ``problems()`` says what else should
  fail the test that ran it: an exit code the test did not expect (``expect_exit``), or a Python traceback the
  daemon logged; the pytest plugin (agents/pytest_plugin.py) asks it of every daemon a test started.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil

from agents.runtime import check_outcome
from agents.sdk import validate_state
from ipc.control import SOCKET_NAME, ControlClient, ControlUnreachable
from ipc.flags import FlagTable, parse_value

T = TypeVar("T")

TRACEBACK = "Traceback (most recent call last):"
# At the start of a line: the daemon's own (log.exception, an uncaught error, a helper sharing its stderr), maybe
# after a journal priority. A child's lines carry "name | " (from its stderr "name ! ") in front: its tracebacks are
# its own business.
_OWN_TRACEBACK = re.compile(r"^(?:<\d>)?" + re.escape(TRACEBACK), re.MULTILINE)

_trackers: list[list[DaemonProcess]] = []


class WaitTimeout(AssertionError):
    """The condition did not hold before the deadline."""


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.005, what: str = "") -> T:
    """Return the first truthy value of ``predicate()``; raise WaitTimeout after ``timeout`` seconds.

    Exceptions from the predicate count as "not yet" until the deadline, then the last one is chained.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout}s waiting for {what or predicate}") from last_exc
        time.sleep(interval)


def exited(pid: int) -> bool:
    """The process has exited (reaped, or a zombie waiting for its reaper)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@contextlib.contextmanager
def killing(daemon: DaemonProcess, name: str, low: float = 0.2, high: float = 0.3, seed: int = 0xF00D
            ) -> Iterator[list[int]]:
    """Chaos for tests: SIGKILL child ``name`` again and again, each incarnation after ``low``..``high`` seconds
    of running; keeps going while the daemon is down and after it is back. Yields the pids killed so far."""
    stop = threading.Event()
    killed: list[int] = []
    rng = random.Random(seed)

    def running(last: int | None) -> int | None:
        node = daemon.node(name)
        pid = node.get("pid")
        return pid if node["state"] == "running" and pid and pid != last else None

    def run() -> None:
        last: int | None = None
        while not stop.is_set():
            try:
                pid = wait_for(lambda last=last: running(last), timeout=1, interval=0.02)
            except Exception:  # the daemon is down or the child is restarting: look again
                if stop.wait(0.02):
                    return
                continue
            if stop.wait(rng.uniform(low, high)):  # pacing, not synchronisation
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            last = pid

    thread = threading.Thread(target=run, name=f"kill-{name}", daemon=True)
    thread.start()
    try:
        yield killed
    finally:
        stop.set()
        thread.join(timeout=10)


def processes_with_marker(marker: str) -> list[psutil.Process]:
    """Live (non-zombie) processes whose environment carries FOUNDATION_RUNTIME_DIR=marker."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get("FOUNDATION_RUNTIME_DIR") == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def tracebacks(log: str) -> list[str]:
    """The daemon's own tracebacks in ``log``, each up to its exception line."""
    found = []
    for match in _OWN_TRACEBACK.finditer(log):
        lines = log[match.start():].splitlines()
        end = next((i for i, line in enumerate(lines[1:], 1) if line and not line[0].isspace()), len(lines) - 1)
        found.append("\n".join(lines[: end + 1]))
    return found


@contextlib.contextmanager
def tracking_daemons() -> Iterator[list[DaemonProcess]]:
    """Collect every DaemonProcess started inside the block, however the test made it: what the pytest plugin
    checks after each test."""
    started: list[DaemonProcess] = []
    _trackers.append(started)
    try:
        yield started
    finally:
        _trackers.remove(started)


class DaemonProcess:
    """A foundationd started in its own runtime/state directories under ``base``."""

    def __init__(self, base: Path, config: str | None = None, name: str = "d") -> None:
        self.base = base
        self.runtime_dir = base / f"{name}-run"
        self.state_dir = base / f"{name}-state"
        self.config_path: Path | None = None
        if config is not None:
            self.config_path = base / f"{name}.toml"
            self.config_path.write_text(textwrap.dedent(config))
        self.log_path = base / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.expected_exits = {0}
        self._runs: list[subprocess.Popen[bytes]] = []  # every start, so that an earlier run's exit is judged too
        self._last_log = ""  # the log as stop() left it, should a fixture remove the directory before the check

    @property
    def socket_path(self) -> str:
        return str(self.runtime_dir / SOCKET_NAME)

    def start(self, wait: bool = True, cwd: Path | None = None) -> DaemonProcess:
        """Run foundationd (from ``cwd``, default this process's directory); with ``wait``, until it answers."""
        argv = [sys.executable, "-m", "daemon.main", "--runtime-dir", str(self.runtime_dir),
                "--state-dir", str(self.state_dir)]
        if self.config_path is not None:
            argv += ["--config", str(self.config_path)]
        env = {**os.environ, "FOUNDATION_RUNTIME_DIR": str(self.runtime_dir)}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        self._runs.append(self.proc)
        if _trackers and self not in _trackers[-1]:  # the innermost block owns it (pytester runs tests in tests)
            _trackers[-1].append(self)
        if wait:
            # An early exit ends the wait at once (wait_for would take an exception for "not yet").
            wait_for(lambda: self.proc.poll() is not None or self._reachable(), timeout=15,
                     what=f"foundationd control socket in {self.runtime_dir}")
            if self.proc.poll() is not None:
                raise AssertionError(f"foundationd exited with {self.proc.returncode}: {self.log()}")
        return self

    def _reachable(self) -> bool:
        try:
            with ControlClient(self.socket_path, timeout=5) as client:
                client.request("status")
            return True
        except ControlUnreachable:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout: float = 10) -> None:
        wait_for(lambda: text in self.log(), timeout=timeout, what=f"{text!r} in the daemon log")

    def client(self, timeout: float = 30) -> ControlClient:
        return ControlClient(self.socket_path, timeout=timeout)

    def request(self, verb: str, **args: Any) -> Any:
        with self.client() as client:
            return client.request(verb, **args)

    def status(self) -> dict[str, Any]:
        return self.request("status")

    def node(self, name: str) -> dict[str, Any]:
        """The status entry of one child, searched through the whole tree."""
        todo = [self.status()["tree"]]
        while todo:
            node = todo.pop()
            if node["name"] == name:
                return node
            todo.extend(node.get("children", []))
        raise KeyError(name)

    def pid(self, name: str) -> int | None:
        return self.node(name).get("pid")

    def wait_running(self, name: str, not_pid: int | None = None, timeout: float = 10) -> int:
        """Wait until ``name`` runs (with a pid other than ``not_pid``); return its pid."""

        def check() -> int | None:
            node = self.node(name)
            pid = node.get("pid")
            if node["state"] == "running" and pid and pid != not_pid:
                return pid
            return None

        return wait_for(check, timeout=timeout, what=f"{name} running")

    def wait_exit(self, timeout: float = 30) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise WaitTimeout(f"foundationd did not exit within {timeout}s: {self.log()}") from None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the daemon. After SIGKILL, death by SIGKILL is an expected end: the test chose it."""
        assert self.proc is not None
        if sig == signal.SIGKILL:
            self.expected_exits.add(-signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    def expect_exit(self, *codes: int) -> DaemonProcess:
        """The test makes this daemon fail on purpose: ending with one of ``codes`` does not fail the test."""
        self.expected_exits.update(codes)
        return self

    def problems(self) -> list[str]:
        """What should fail the test that ran this daemon: a run that still goes on or ended with a code the
        test did not expect, and any traceback the daemon logged. Empty when all is well."""
        found = []
        for proc in self._runs:
            code = proc.poll()
            if code is None:
                found.append(f"foundationd (pid {proc.pid}) still runs")
            elif code not in self.expected_exits:
                found.append(f"foundationd (pid {proc.pid}) exited with {code}; a test that means it calls "
                             f"expect_exit({code}). Its log, {self.log_path}:\n{self._log_tail()}")
        log = self.log() if self.log_path.exists() else self._last_log
        found += [f"foundationd logged a traceback ({self.log_path}):\n{tb}" for tb in tracebacks(log)]
        return found

    def _log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def leftovers(self) -> list[psutil.Process]:
        return processes_with_marker(str(self.runtime_dir))

    def stop(self) -> None:
        """Stop the daemon if it still runs, then insist that nothing it started is left."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"foundationd ignored SIGTERM: {self.log()}") from None
        self._last_log = self.log()
        # Children die by PDEATHSIG or by the daemon's own stop; give the kernel a moment to deliver.
        wait_for(lambda: not self.leftovers(), timeout=10, what="no process left behind")


# ---- an in-process harness for unit tests of user agents ----


class AgentHarness:
    """Drive an Agent class synchronously, without a daemon: fast unit tests for user agents.

    It applies the same rules as the real runtime, through the runtime's own ``check_outcome``: ``init`` when
    no state is given, ``mount``, then for every message the new state must pass the schema and be storable
    (not None, JSON-encodable) and a call's reply must travel (JSON-encodable, at most ``MAX_REPLY`` bytes).
    When a handler raises or its outcome fails those checks, the old state stays and the error is raised to
    the test, as the runtime would report it to a caller (or log it for a cast). ``on_after_validate_state``
    runs after every accepted change. What the agent sends, calls, monitors or schedules is recorded;
    ``call_replies`` answers its calls.

        h = AgentHarness(Counter)
        h.cast({"add": 2})
        assert h.call({"get": True}) == {"count": 2}
    """

    def __init__(self, agent_class: type, state: Any = None, name: str = "agent-under-test",
                 call_replies: Callable[[str, Any], Any] | None = None) -> None:
        self.name = name
        self.agent = agent_class()
        self.flags = FlagTable()  # what ``self.enabled`` answers from: set it with ``set_flag``
        self.agent._runtime = _HarnessRuntime(self)
        self.sent: list[tuple[str, Any]] = []
        self.calls: list[tuple[str, Any]] = []
        self.monitors: dict[int, str] = {}
        self.persisted: list[Any] = []  # states the agent committed in the middle of a handler
        self.stopped = False  # the agent asked to exit once its batch is done
        self.timers: dict[int, tuple[float, float | None]] = {}
        self._call_replies = call_replies
        self._ref = 0
        self.state = self.agent.init() if state is None else state
        validate_state(self.agent, self.state)  # what the runtime checks of a loaded or initial state
        self.agent.mount(self.state)

    def cast(self, body: Any) -> Any:
        return self._apply(lambda: (self.agent.handle_cast(body, self.state), None), call=False)[0]

    def call(self, body: Any) -> Any:
        return self._apply(lambda: _swap(self.agent.handle_call(body, self.state)), call=True)[1]

    def info(self, body: Any) -> Any:
        return self._apply(lambda: (self.agent.handle_info(body, self.state), None), call=False)[0]

    def tick(self, ref: int) -> Any:
        return self.info({"tick": ref})

    def down(self, ref: int, reason: str = "killed") -> Any:
        target = self.monitors.pop(ref)
        return self.info({"down": {"ref": ref, "target": target, "reason": reason}})

    def stop(self) -> None:
        self.agent.shutdown(self.state)

    def set_flag(self, name: str, value: object, killed: bool = False) -> None:
        """Feature flag ``name`` as the daemon would push it: ``on``, ``off`` or a percentage."""
        kind, percent = parse_value(value)
        self.flags.version += 1
        self.flags.flags[name] = {"kind": kind, "percent": percent, "killed": killed}

    def _apply(self, run: Callable[[], tuple[Any, Any]], call: bool) -> tuple[Any, Any]:
        new_state, reply = run()
        check_outcome(self.agent, new_state, reply, call=call)
        self.state = new_state
        self.agent.on_after_validate_state(self.state)
        return self.state, reply


class _HarnessRuntime:
    """What the agent sees as its runtime inside an AgentHarness: records instead of sending."""

    def __init__(self, harness: AgentHarness) -> None:
        self.h = harness
        self.name = harness.name
        self.flags = harness.flags

    def send(self, to: str, body: Any) -> str:
        self.h.sent.append((to, body))
        return f"{to}/{len(self.h.sent)}"

    def call(self, to: str, body: Any, timeout: float) -> Any:
        self.h.calls.append((to, body))
        if self.h._call_replies is None:
            raise AssertionError(f"the agent called {to!r} but the harness has no call_replies")
        return self.h._call_replies(to, body)

    def monitor(self, target: str) -> int:
        self.h._ref += 1
        self.h.monitors[self.h._ref] = target
        return self.h._ref

    def demonitor(self, ref: int) -> None:
        self.h.monitors.pop(ref, None)

    def set_timer(self, after: float, every: float | None) -> int:
        self.h._ref += 1
        self.h.timers[self.h._ref] = (after, every)
        return self.h._ref

    def cancel_timer(self, ref: int) -> None:
        self.h.timers.pop(ref, None)

    def persist(self, state: Any) -> None:
        validate_state(self.h.agent, state)
        self.h.persisted.append(state)

    def stop(self) -> None:
        self.h.stopped = True

    def busy(self, seconds: float) -> None:
        pass


def _swap(pair: tuple[Any, Any]) -> tuple[Any, Any]:
    reply, state = pair
    return state, reply
