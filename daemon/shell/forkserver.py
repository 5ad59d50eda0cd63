"""foundationd's side of the agent fork server (the zygote in agents/zygote.py): when to use it, its pool of spares.

    ProcessShell.spawn(agent spec) ──forkable?──> ForkServer.spawn(request, output fds) ──> pid | None
        pid: a spare (an agent-to-be forked ahead of time, already foundationd's child) took the request
        None: no spare at hand, no zygote, or it was given up: the shell execs the agent instead (only slower)

Nothing here waits for the zygote on the loop: spares arrive on the zygote's socket, read when it is readable,
and a spawn is one non-blocking message to a spare. The pool is refilled after each use (``SPARES`` kept; more for
a tree of many agents: ``size_for``).
The one wait is at boot (``wait_for_spare``), before the tree starts, when it has agents: starting them by
exec meanwhile would cost more than the zygote's ~0.1 s of imports.

The zygote is a child of foundationd like any other: started through the shell, its output captured under
the name ``(zygote)``, its exit reaped and reported here; each spare is watched by the shell too (named
``(spare)`` until it becomes an agent). A zygote that dies, or is killed for not answering or answering
nonsense, is replaced at once; after ``MAX_FAILURES`` failures in a row (no agent forked in between) it is
left off until a reload turns it on again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from daemon.core.spec import WorkerSpec

log = logging.getLogger("foundationd")

NAME = "(zygote)"  # never a child's name: NAME_RE in daemon/config.py has no parentheses
SPARE_NAME = "(spare)"
SPARES = 2  # kept ready: two agents that crash together both start from a spare
# A tree of many agents keeps more: its boot starts them back to back, every ~6 ms, faster than one fresh spare is
# ready (the zygote forks it, it faults its pages in and connects ahead); with 2 the boot waited on fresh spares
# (500 agents: 7.1 s with 2, 3.9 s with 8, 4.8 s with 16, on a quiet machine). One more spare per 4 agents, up to 8.
MANY_SPARES = 8
AGENTS_PER_SPARE = 4
BOOT_WAIT = 5.0  # imports take ~0.1 s; this is for a heavily loaded machine, and well under WatchdogSec
MAX_FAILURES = 3
MAX_MESSAGE = 64 * 1024
MAX_REQUEST = 64 * 1024  # an agent's request (its environment, mostly) that one datagram to a spare surely holds
# What an exec applies and a fork cannot: the interpreter and the dynamic loader read these only at start.
EXEC_ONLY_ENV = ("PYTHON", "LD_", "MALLOC_", "GLIBC_TUNABLES")
# A forked agent writes its environment over the zygote's, where /proc/PID/environ shows it: this makes room.
ROOM_VARIABLE = "FOUNDATION_ENVIRON_ROOM"
ENVIRON_ROOM = 16 * 1024

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


class ForkServer:
    """The zygote's lifecycle (off, booting, ready, disabled) and its pool of spares."""

    def __init__(
        self,
        launch: Launch,
        kill: Callable[[int], None],
        adopt: Callable[[int], None],
        *,
        add_reader: Callable[[int, Callable[[], None]], None],
        remove_reader: Callable[[int], None],
        env: Callable[[], dict[str, str]],
        enabled: bool = True,
        boot_wait: float = BOOT_WAIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``adopt(pid)``: the shell starts watching a new spare; ``kill(pid)`` SIGKILLs a zygote or a spare;
        ``env()``: the zygote's environment."""
        self._launch = launch
        self._kill = kill
        self._adopt = adopt
        self._add_reader = add_reader
        self._remove_reader = remove_reader
        self._env = env
        self._boot_wait = boot_wait
        self._clock = clock
        self.state = "off" if enabled else "disabled"
        self.pid: int | None = None
        self._sock: socket.socket | None = None
        self._started_at = 0.0
        self._spares: deque[tuple[int, socket.socket]] = deque()
        self.pool = SPARES  # spares kept ready (size_for)
        self._asked = 0  # spares asked for and not arrived yet
        self._failures = 0
        self.spawns = 0
        self.fallbacks = 0
        self.last_error: str | None = None
        self._closed = False  # foundationd is going away: nothing starts any more

    # ---- lifecycle ----

    def start(self) -> None:
        """Start the zygote unless it is running or disabled; it imports in parallel with whatever we do next."""
        if self.state != "off" or self._closed:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # -P: no working directory in front of sys.path, so a directory's own `agents` cannot replace ours.
            argv = [sys.executable, "-P", "-m", "agents.zygote", str(theirs.fileno())]
            self.pid = self._launch(argv, self._env(), (theirs.fileno(),))
        except Exception as exc:
            ours.close()
            self._failed(f"could not start: {exc}")
            return
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._add_reader(ours.fileno(), self._on_readable)
        self._started_at = self._clock()
        self._asked = 0
        self.state = "booting"

    def size_for(self, agents: int) -> None:
        """Keep spares for a tree of ``agents`` forkable agents: 2, and one more per 4 agents up to 8."""
        self.pool = max(SPARES, min(MANY_SPARES, agents // AGENTS_PER_SPARE))

    def wait_for_spare(self, timeout: float) -> bool:
        """At boot only: block until the first spare is here (or ``timeout``), so the first agents are forked."""
        deadline = self._clock() + timeout
        while self.state == "booting" or (self.state == "ready" and not self._spares and self._asked):
            left = deadline - self._clock()
            if left <= 0 or self._sock is None:
                return False
            select.select([self._sock], [], [], left)
            self._on_readable()
        return bool(self._spares)

    def exited(self, pid: int, description: str) -> None:
        """A zygote process died (the shell reaped it): spares already made stay usable; start another."""
        if pid != self.pid or self._closed:
            return  # one we had given up on and killed, or foundationd is going away
        self.pid = None
        self._close_socket()
        if self.state != "disabled":
            self._failed(f"exited ({description})")
        self.start()

    def spare_exited(self, pid: int) -> None:
        """A spare died before it was used (the shell reaped it): forget it, and make another."""
        for entry in list(self._spares):
            if entry[0] == pid:
                self._spares.remove(entry)
                entry[1].close()
        self._refill()

    def configure(self, enabled: bool) -> None:
        """A reload's ``fork_server``: off stops the zygote and its spares; on starts over, also after it was given
        up."""
        if not enabled:
            self._close_socket()
            self._drop_spares()
            if self.pid is not None:
                self._kill(self.pid)
            self.state = "disabled"
        elif self.state == "disabled":
            self.state = "off"
            self._failures = 0
            self.start()

    def close(self) -> None:
        """EOF makes the zygote leave its loop and the spares exit; the shell reaps them with the other children."""
        self._closed = True
        self._close_socket()
        self._drop_spares()
        if self.state != "disabled":
            self.state = "off"

    def describe(self) -> dict[str, Any]:
        return {"state": self.state, "pid": self.pid, "spares": [pid for pid, _ in self._spares],
                "spawns": self.spawns, "fallbacks": self.fallbacks, "last_error": self.last_error}

    # ---- spawning ----

    def spawn(self, request: dict[str, Any], output_fds: tuple[int, int]) -> int | None:
        """The pid of the spare that took ``request`` and is becoming the agent, its stdout and stderr the write
        ends ``output_fds`` (the spare gets copies); None when it must be exec'd."""
        if self.state == "off":
            self.start()
        elif self.state == "booting" and self._clock() - self._started_at > self._boot_wait:
            self._abandon(f"not ready after {self._boot_wait:g} s")
        body = orjson.dumps(request)
        if len(body) > MAX_REQUEST:  # more than a spare's socket buffer takes at once: exec it, keep the spares
            self.fallbacks += 1
            return None
        while self._spares:
            pid, channel = self._spares.popleft()
            try:
                socket.send_fds(channel, [body], list(output_fds), socket.MSG_DONTWAIT)
            except OSError:
                continue  # it died meanwhile; its exit is on its way to spare_exited
            finally:
                channel.close()
            self._failures = 0
            self.spawns += 1
            self._refill()
            return pid
        self.fallbacks += 1
        self._refill()
        return None

    def _refill(self) -> None:
        wanted = self.pool - len(self._spares) - self._asked
        if self.state != "ready" or wanted <= 0 or self._sock is None:
            return
        try:
            self._sock.send(orjson.dumps({"spares": wanted}), socket.MSG_DONTWAIT)
        except OSError as exc:
            self._abandon(f"cannot ask for spares: {exc}")
            return
        self._asked += wanted

    def _on_readable(self) -> None:
        while self._sock is not None:
            try:
                data, fds, _, _ = socket.recv_fds(self._sock, MAX_MESSAGE, 1)
            except BlockingIOError:
                return
            except OSError as exc:
                self._abandon(f"connection failed: {exc}")
                return
            if not data:  # it is exiting: exited() will say why and start another
                self._close_socket()
                return
            self._on_message(data, fds)

    def _on_message(self, data: bytes, fds: list[int]) -> None:
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            message = None
        if not isinstance(message, dict):
            for fd in fds:
                os.close(fd)
            self._abandon(f"bad message {data[:80]!r}")
        elif message.get("ready") is True and self.state == "booting":
            self.state = "ready"
            log.debug("zygote (pid %s) ready after %.1f ms", self.pid, (self._clock() - self._started_at) * 1000)
            self._refill()
        elif isinstance(message.get("spare"), int) and len(fds) == 1:
            self._asked = max(0, self._asked - 1)
            channel = socket.socket(fileno=fds[0])
            self._adopt(message["spare"])
            self._spares.append((message["spare"], channel))
        elif "error" in message:
            self._asked = 0
            self.last_error = f"zygote: {message['error']}"
            log.warning("zygote: %s", message["error"])
        else:
            for fd in fds:
                os.close(fd)
            self._abandon(f"unexpected message {data[:80]!r}")

    # ---- failures ----

    def _abandon(self, reason: str) -> None:
        """Kill a zygote that failed us and start another (none after MAX_FAILURES)."""
        pid, self.pid = self.pid, None
        self._close_socket()
        self._failed(reason)
        if pid is not None:
            self._kill(pid)
        self.start()

    def _failed(self, reason: str) -> None:
        self._failures += 1
        self.last_error = reason
        if self._failures >= MAX_FAILURES:
            self.state = "disabled"
            log.warning("zygote %s; %d failures in a row, agents are exec'd from now on", reason, self._failures)
        else:
            self.state = "off"
            log.warning("zygote %s; starting another", reason)

    def _drop_spares(self) -> None:
        while self._spares:
            self._spares.popleft()[1].close()  # EOF: the spare exits on its own, and the shell reaps it

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._remove_reader(self._sock.fileno())
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
        self._asked = 0
