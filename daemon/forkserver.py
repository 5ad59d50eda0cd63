"""foundationd's side of the agent fork server (the zygote in agents/zygote.py): when to use it, and talking to it.

    ProcessShell.spawn(agent spec) ──forkable?──> ForkServer.spawn(request, output fd) ──> pid | None
                                    (None: not running, disabled or it failed; the shell execs the agent instead)

The zygote is a child of foundationd like any other: started through the shell, its output captured under the
name ``(zygote)``, its exit reaped and reported here. It is started at boot when the tree has agents, or at the
first agent spawn; if it dies it is started again at the next one, and after ``MAX_FAILURES`` failures in a row
(no successful spawn in between) it is left off and every agent is exec'd, which is only slower.

A request is synchronous, like ``subprocess.Popen`` (which waits for the exec): the zygote forks twice and answers
in ~1-2 ms. A first spawn while the zygote is still importing waits for its ready message, at most
``BOOT_WAIT`` seconds; a zygote that misses that or a reply deadline is killed and counts as a failure.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from daemon.spec import WorkerSpec

log = logging.getLogger("foundationd")

NAME = "(zygote)"  # never a child's name: NAME_RE in daemon/config.py has no parentheses
BOOT_WAIT = 5.0  # imports take ~0.1 s; this is for a heavily loaded machine, and well under WatchdogSec
REPLY_WAIT = 5.0  # two forks and a waitpid; past this the zygote is stuck
MAX_FAILURES = 3
MAX_REPLY = 64 * 1024
# A forked agent writes its environment over the zygote's, where /proc/PID/environ shows it: this makes room.
ROOM_VARIABLE = "FOUNDATION_ENVIRON_ROOM"
ENVIRON_ROOM = 16 * 1024
# What an exec applies and a fork cannot: the interpreter and the dynamic loader read these only at start.
EXEC_ONLY_ENV = ("PYTHON", "LD_", "MALLOC_", "GLIBC_TUNABLES")

Launch = Callable[[list[str], dict[str, str], tuple[int, ...]], int]  # argv, env, fds to pass -> pid


def fork_refusal(spec: WorkerSpec) -> str | None:
    """Why ``spec`` must be exec'd rather than forked from the zygote, or None when forking gives the same process."""
    if not spec.agent:
        return "not an SDK agent"
    if spec.user is not None or spec.group is not None:
        return "runs as another user or group"
    if spec.limits:
        return "has resource limits (applied by prlimit at exec)"
    for key, _ in spec.env:
        if key.startswith(EXEC_ONLY_ENV):
            return f"env sets {key}, which only an exec applies"
    return None


class ForkServerError(Exception):
    """The zygote could not give an agent; the caller execs it instead."""


class ForkServer:
    """The zygote's lifecycle (off, booting, ready, disabled) and its request/reply protocol."""

    def __init__(self, launch: Launch, kill: Callable[[int], None], *, enabled: bool = True,
                 boot_wait: float = BOOT_WAIT) -> None:
        self._launch = launch
        self._kill = kill
        self._boot_wait = boot_wait
        self.state = "off" if enabled else "disabled"
        self.pid: int | None = None
        self._sock: socket.socket | None = None
        self._failures = 0
        self.spawns = 0
        self.fallbacks = 0
        self.last_error: str | None = None

    # ---- lifecycle ----

    def start(self, env: dict[str, str]) -> None:
        """Start the zygote unless it is running or disabled; it imports in parallel with whatever we do next."""
        if self.state != "off":
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # -P: no working directory in front of sys.path, so a directory's own `agents` cannot replace ours.
            argv = [sys.executable, "-P", "-m", "agents.zygote", str(theirs.fileno())]
            self.pid = self._launch(argv, env, (theirs.fileno(),))
        except Exception as exc:
            ours.close()
            self._failed(f"could not start: {exc}")
            return
        finally:
            theirs.close()
        self._sock = ours
        self.state = "booting"

    def exited(self, description: str) -> None:
        """The zygote process died (the shell reaped it)."""
        self.pid = None
        if self.state in ("booting", "ready"):
            self._close_socket()
            self._failed(f"exited ({description})")

    def configure(self, enabled: bool) -> None:
        """A reload's ``fork_server``: off stops the zygote; on starts over, also after the zygote was given up."""
        if not enabled:
            self._close_socket()
            if self.pid is not None:
                self._kill(self.pid)
            self.state = "disabled"
        elif self.state == "disabled":
            self.state = "off"
            self._failures = 0

    def close(self) -> None:
        """Closing our end makes the zygote leave its loop and exit; the shell reaps it with the other children."""
        self._close_socket()
        if self.state != "disabled":
            self.state = "off"

    def describe(self) -> dict[str, Any]:
        return {"state": self.state, "pid": self.pid, "spawns": self.spawns, "fallbacks": self.fallbacks,
                "last_error": self.last_error}

    # ---- spawning ----

    def spawn(self, request: dict[str, Any], output_fd: int) -> int | None:
        """The new agent's pid, already foundationd's child; None when it must be exec'd instead."""
        if self.state == "booting":
            self._await_boot()
        if self.state != "ready":
            self.fallbacks += 1
            return None
        try:
            pid = self._request(request, output_fd)
        except ForkServerError as exc:
            self.fallbacks += 1
            self._abandon(str(exc))
            return None
        self._failures = 0
        self.spawns += 1
        return pid

    def _request(self, request: dict[str, Any], output_fd: int) -> int:
        assert self._sock is not None
        try:
            socket.send_fds(self._sock, [orjson.dumps(request)], [output_fd])
            data = self._receive(REPLY_WAIT)
        except OSError as exc:
            raise ForkServerError(f"request failed: {exc}") from None
        try:
            reply = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ForkServerError(f"bad reply {data[:80]!r}") from None
        if isinstance(reply, dict) and isinstance(reply.get("pid"), int):
            return reply["pid"]
        raise ForkServerError(f"zygote: {reply.get('error') if isinstance(reply, dict) else reply!r}")

    def _await_boot(self) -> None:
        started = time.monotonic()
        try:
            data = self._receive(self._boot_wait)
            hello = orjson.loads(data)
        except (OSError, ForkServerError, orjson.JSONDecodeError) as exc:
            self._abandon(f"not ready: {exc}")
            return
        if not (isinstance(hello, dict) and hello.get("ready") is True):
            self._abandon(f"not ready: said {data[:80]!r}")
            return
        self.state = "ready"
        log.debug("zygote (pid %s) ready after a %.1f ms wait", self.pid, (time.monotonic() - started) * 1000)

    def _receive(self, timeout: float) -> bytes:
        assert self._sock is not None
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        if not poller.poll(timeout * 1000):
            raise ForkServerError(f"no answer within {timeout:g} s")
        data = self._sock.recv(MAX_REPLY)
        if not data:
            raise ForkServerError("it closed the connection")
        return data

    # ---- failures ----

    def _abandon(self, reason: str) -> None:
        """Kill a zygote that failed us; the next agent spawn starts a new one (or none, after MAX_FAILURES)."""
        self._close_socket()
        if self.pid is not None:
            self._kill(self.pid)
        self._failed(reason)

    def _failed(self, reason: str) -> None:
        self._failures += 1
        self.last_error = reason
        if self._failures >= MAX_FAILURES:
            self.state = "disabled"
            log.warning("zygote %s; %d failures in a row, agents are exec'd from now on", reason, self._failures)
        else:
            self.state = "off"
            log.warning("zygote %s; a new one starts with the next agent", reason)

    def _close_socket(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
