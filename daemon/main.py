"""``foundationd``: wires the pure supervision core to the loop, the process shell and the control socket.

    signals ─┐                       ┌─> ProcessShell (spawn, signal, reap) ─┐
    pidfds ──┼─> EventLoop ─> Daemon ┤                                       ├─> events ─> SupervisionTree
    control ─┘                       └─> ControlServer (verbs)   <── actions ┘
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import fcntl
import logging
import os
import resource
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon import paths, version
from daemon.broker.broker import Broker
from daemon.config import ConfigError, DaemonConfig, child_spec_from_dict, load_config
from daemon.control.server import ControlServer, Peer, Reply
from daemon.core.protocol import (
    Action,
    CancelTimer,
    Event,
    Exited,
    ExtendTimeout,
    Halt,
    Log,
    Ready,
    Removed,
    Signal,
    Spawn,
    Spawned,
    SpawnFailed,
    StartTimer,
    TimerFired,
)
from daemon.core.reload import Plan, diff
from daemon.core.spec import ChildSpec, SupervisorSpec, WorkerSpec
from daemon.core.states import DOWN, State
from daemon.core.tree import AnyNode, SupervisionTree, Supervisor, Worker
from daemon.shell import forkserver
from daemon.shell.child_notify import ERRNO_MAX, EXIT_STATUS_MAX, USEC_MAX, ChildNotifySocket, parse_uint
from daemon.shell.logs import LogRings
from daemon.shell.loop import EventLoop, TimerHandle
from daemon.shell.memory import MemoryWatch
from daemon.shell.notify import Notifier
from daemon.shell.output import OutputSink, SinkHandler, stderr_is_journal
from daemon.shell.process import GUARDIAN_NAME, ProcessShell, SpawnError, become_subreaper
from ipc.control import Request
from ipc.errors import ErrorCode, FoundationError
from ipc.state_store import StateError, StateStore, agent_state_path, fsync_dir

log = logging.getLogger("foundationd")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
WAIT_LIMIT = 25.0  # longest a control request waits for its operation (the CLI gives up at 30 s)
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "notice": logging.INFO,
          "warning": logging.WARNING, "error": logging.ERROR}


class Waiter:
    """A control request whose reply waits until the tree reaches the state it asked for."""

    def __init__(self, done: Callable[[], bool], answer: Callable[[], Any], reply: Reply) -> None:
        self.done, self.answer, self.reply = done, answer, reply
        self.timer: TimerHandle | None = None


class Daemon:
    def __init__(
        self,
        config: DaemonConfig,
        runtime_dir: Path,
        state_dir: Path,
        sinks: tuple[OutputSink, ...] = (),
        config_path: str | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.notifier = Notifier()
        self._ready_sent = False
        self._reloading = False
        # What notify children reported, shown in their status entries: "status" (STATUS=, until the child exits),
        # "errno" and "exit_status" (ERRNO=, EXIT_STATUS=, until the child's next start, like last_exit).
        self._child_status: dict[str, dict[str, Any]] = {}
        self._watchdogs: dict[str, TimerHandle] = {}
        self._watchdog_usec: dict[str, tuple[int, float]] = {}  # name -> (pid, interval) set by WATCHDOG_USEC=
        self._restart_times: deque[float] = deque()
        self._restarts_seen = 0
        self._status_timer: TimerHandle | None = None
        self.runtime_dir = runtime_dir
        self.state_dir = state_dir
        self.loop = EventLoop()
        self.started_at = time.monotonic()
        self.tree = SupervisionTree(config.root, self.loop.clock)
        self.shell = ProcessShell(
            self.loop.add_reader,
            self.loop.remove_reader,
            self._on_exit,
            self._on_output,
            base_env={"FOUNDATION_RUNTIME_DIR": str(runtime_dir), "FOUNDATION_STATE_DIR": str(state_dir)},
            fork_server=config.fork_server,
        )
        self.memory = MemoryWatch(self.loop.call_later, self._memory_watched, self._kill_for_memory)
        self._memory_poke = False
        self.control: ControlServer | None = None
        self.broker: Broker | None = None
        self.child_notify: ChildNotifySocket | None = None
        self._timers: dict[int, TimerHandle] = {}
        self._pending: deque[Event] = deque()
        self._waiters: list[Waiter] = []
        self._exit_code = EXIT_OK
        self._sinks = sinks
        self.logs = LogRings()

    # ---- lifecycle ----

    def run(self) -> int:
        become_subreaper()
        for sink in self._sinks:
            sink.attach(self.loop.add_writer, self.loop.remove_writer)
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(signum, self._on_stop_signal)
        self.loop.add_signal_handler(signal.SIGCHLD, lambda _: self.shell.reap())
        self.loop.add_signal_handler(signal.SIGHUP, lambda _: self._reload(None))
        self.child_notify = ChildNotifySocket(
            self.runtime_dir,
            self.loop.add_reader,
            self.loop.remove_reader,
            self._notify_child_of,
            self._on_child_notify,
        )
        self.shell.before_reap = self.child_notify.drain
        self.broker = Broker(
            self.runtime_dir,
            self.state_dir,
            self.loop,
            agent_alive=self._agent_alive,
            kill=self._kill_agent,
            mailbox_bound=self._mailbox_bound,
            liveness=self._liveness,
            on_hello=self._on_agent_hello,
        )
        self.shell.start_guardian()  # before the first child: a SIGKILLed daemon leaves no process group behind
        if _has_agents(self.config.root):  # the zygote imports the SDK while the rest of the daemon boots
            self.shell.start_zygote()
        self.control = ControlServer(self.runtime_dir, self._handlers(), self.loop, self.config.control_group)
        log.info("foundationd %s (pid %d) starting; control socket %s", version(), os.getpid(), self.control.path)
        if self.notifier.enabled and self.notifier.watchdog_interval:  # no socket: nobody to ping
            self._ping_watchdog()
        try:
            if self.shell.zygote.state == "booting":  # the tree's agents start from spares, not by exec
                self.shell.zygote.wait_for_spare(forkserver.BOOT_WAIT)
            self._apply(self.tree.boot())
            self.loop.run()
        finally:
            self._close()
        return self._exit_code

    def _close(self) -> None:
        self.memory.close()
        if self.control is not None:
            self.control.close()
        self.shell.close()
        if self.broker is not None:
            self.broker.close()
        if self.child_notify is not None:
            self.child_notify.close()
        self.notifier.close()
        for sink in self._sinks:
            sink.flush()
            sink.detach()
        self.loop.close()

    def _on_stop_signal(self, signum: int) -> None:
        log.info("received %s", signal.Signals(signum).name)
        self._shutdown()

    def _shutdown(self) -> None:
        if not self.tree.shutting_down:
            self.notifier.stopping()
        self._apply(self.tree.shutdown())

    # ---- systemd: readiness, status, watchdog ----

    def _after_apply(self) -> None:
        """After every batch of events: READY=1 once the tree is up, and a current STATUS= line."""
        if not self._ready_sent and self.tree.root.state is State.RUNNING:
            self._ready_sent = True
            self.notifier.ready()
            log.info("tree started")
        if self.notifier.enabled:
            self.notifier.status(self._summary())

    def _summary(self) -> str:
        workers = self.tree.workers()
        running = sum(1 for w in workers if w.state is State.RUNNING)
        now = self.loop.clock()
        total = _total_restarts(self.tree.root)
        self._restart_times.extend([now] * max(0, total - self._restarts_seen))
        self._restarts_seen = total
        while self._restart_times and self._restart_times[0] <= now - 60:
            self._restart_times.popleft()
        if self._restart_times and self._status_timer is None:  # refresh when the oldest leaves the minute
            delay = self._restart_times[0] + 60 - now
            self._status_timer = self.loop.call_later(delay, self._refresh_status)
        return f"{running}/{len(workers)} children running, {len(self._restart_times)} restarts in the last minute"

    def _refresh_status(self) -> None:
        self._status_timer = None
        self.notifier.status(self._summary())

    def _ping_watchdog(self) -> None:
        """From the loop itself: if the loop wedges, the pings stop and systemd restarts us."""
        self.notifier.watchdog()
        assert self.notifier.watchdog_interval is not None
        self.loop.call_later(self.notifier.watchdog_interval, self._ping_watchdog)

    # ---- children's sd_notify ----

    def _notify_child_of(self, pgid: int) -> str | None:
        for worker in self.tree.workers():
            if worker.pid == pgid and worker.spec.ready == "notify":
                return worker.name
        return None

    def _on_child_notify(self, name: str, pid: int, fields: dict[str, str]) -> None:
        """One datagram of a notify child (its group leader is ``pid``), its fields as sd_notify(3) defines them.

        Values that do not parse (not a decimal number, out of range) are ignored with a warning, field by field.
        """
        if "STATUS" in fields:
            self._child_status.setdefault(name, {})["status"] = fields["STATUS"][:200]
        for key, maximum in (("ERRNO", ERRNO_MAX), ("EXIT_STATUS", EXIT_STATUS_MAX)):
            if key in fields:
                value = self._notify_number(name, key, fields[key], maximum)
                if value is not None:
                    self._child_status.setdefault(name, {})[key.lower()] = value
        if "EXTEND_TIMEOUT_USEC" in fields:
            usec = self._notify_number(name, "EXTEND_TIMEOUT_USEC", fields["EXTEND_TIMEOUT_USEC"], USEC_MAX)
            if usec is not None:
                self._apply(self.tree.handle(ExtendTimeout(name, pid, usec / 1e6)))
        if fields.get("READY") == "1":
            self._apply(self.tree.handle(Ready(name, pid)))
            self._arm_watchdog(name, pid)  # systemd arms a service's watchdog once it is started, too
        if "WATCHDOG_USEC" in fields:
            self._set_watchdog_usec(name, pid, fields["WATCHDOG_USEC"])
        if fields.get("WATCHDOG") == "1":
            self._arm_watchdog(name, pid)
        elif fields.get("WATCHDOG") == "trigger":
            self._watchdog_fired(name, pid, "watchdog triggered; killing it (requested by the child)", timeout=False)
        if fields.get("STOPPING") == "1":
            log.info("%s says it is stopping (STOPPING=1)", name)

    def _notify_number(self, name: str, key: str, value: str, maximum: int) -> int | None:
        number = parse_uint(value, maximum)
        if number is None:
            log.warning("%s sent %s=%r: not a whole number from 0 to %d; ignored", name, key, value[:40], maximum)
        return number

    def _arm_watchdog(self, name: str, pid: int) -> None:
        """(Re)start the child's watchdog timer: ``watchdog`` seconds, or what the child set with WATCHDOG_USEC=."""
        node = self.tree.find_quiet(name)
        if not isinstance(node, Worker) or node.spec.watchdog is None or node.pid != pid:
            return
        old = self._watchdogs.pop(name, None)
        if old is not None:
            old.cancel()
        override = self._watchdog_usec.get(name)
        interval = override[1] if override is not None and override[0] == pid else node.spec.watchdog
        if interval == 0:  # WATCHDOG_USEC=0: the child turned its watchdog off
            return
        self._watchdogs[name] = self.loop.call_later(
            interval, lambda: self._watchdog_fired(name, pid, f"sent no WATCHDOG=1 for {interval:g}s; killing it")
        )

    def _watchdog_fired(self, name: str, pid: int, why: str, *, timeout: bool = True) -> None:
        """A watchdog timeout, or WATCHDOG=trigger: SIGKILL, and the core restarts the child as after any crash."""
        node = self.tree.find_quiet(name)
        if not isinstance(node, Worker) or node.pid != pid:
            return
        timer = self._watchdogs.pop(name, None)
        if timer is not None:
            timer.cancel()
        if timeout and node.state is State.STOPPING:
            # As systemd stops a service's watchdog when its stop begins: the stop has its own SIGKILL deadline
            # (``shutdown``, which the child may extend), and a child busy stopping need not ping.
            log.debug("%s: watchdog ran out while it is being stopped; left to its stop", name)
            return
        log.warning("%s %s", name, why)
        self.shell.signal(pid, signal.SIGKILL)

    def _set_watchdog_usec(self, name: str, pid: int, value: str) -> None:
        """WATCHDOG_USEC=: the child's own watchdog interval from now on (this run only; 0 turns it off), as systemd
        does: the timer restarts with the new value. Only for a child with ``watchdog`` configured."""
        node = self.tree.find_quiet(name)
        if not isinstance(node, Worker) or node.pid != pid:
            return
        if node.spec.watchdog is None:
            log.debug("%s sent WATCHDOG_USEC= but has no watchdog configured; ignored", name)
            return
        usec = self._notify_number(name, "WATCHDOG_USEC", value, USEC_MAX)
        if usec is None:
            return
        self._watchdog_usec[name] = (pid, usec / 1e6)
        log.info("%s set its watchdog to %s (WATCHDOG_USEC=%d)", name, f"{usec / 1e6:g}s" if usec else "off", usec)
        if name in self._watchdogs or node.state is State.RUNNING:
            self._arm_watchdog(name, pid)
        # (still starting and not pinging yet: READY=1 arms it with the new value)

    def _on_agent_hello(self, name: str) -> None:
        node = self.tree.find_quiet(name)
        if isinstance(node, Worker) and node.pid is not None:
            self._apply(self.tree.handle(Ready(name, node.pid)))

    # ---- core <-> shell ----

    def _on_exit(self, event: Exited) -> None:
        node = self.tree.find_quiet(event.name)
        if isinstance(node, Worker) and node.pid == event.pid:
            reported = self._child_status.get(event.name)
            if reported is not None:
                reported.pop("status", None)  # ERRNO= and EXIT_STATUS= stay until the next start
                if not reported:
                    del self._child_status[event.name]
            self._watchdog_usec.pop(event.name, None)
            watchdog = self._watchdogs.pop(event.name, None)
            if watchdog is not None:
                watchdog.cancel()
        if self.broker is not None and isinstance(node, Worker) and node.spec.agent and node.pid == event.pid:
            self.broker.agent_exited(event.name, event.describe())
        self._apply(self.tree.handle(event))

    def _on_output(self, name: str, lines: list[bytes]) -> None:
        """A child's complete lines: to our stdout with its name in front, and into its ring for `logs`."""
        prefix = name.encode() + b" | "
        if self._sinks:
            self._sinks[0].write(b"".join(prefix + line + b"\n" for line in lines))
        self.logs.add(name, [line.decode(errors="replace") for line in lines])

    # ---- what the broker asks of the tree ----

    def _agent_alive(self, name: str) -> bool | None:
        node = self.tree.find_quiet(name)
        if not isinstance(node, Worker) or not node.spec.agent:
            return None
        return node.state in (State.STARTING, State.RUNNING)

    def _kill_agent(self, name: str, reason: str) -> None:
        node = self.tree.find_quiet(name)
        if isinstance(node, Worker) and node.pid is not None:
            log.warning("killing %s: %s", name, reason)
            self.shell.signal(node.pid, signal.SIGKILL)

    def _memory_watched(self) -> list[tuple[str, int, int]]:
        return [
            (w.name, w.pid, w.spec.max_memory)
            for w in self.tree.workers()
            if w.spec.max_memory is not None and w.pid is not None and w.state in (State.STARTING, State.RUNNING)
        ]

    def _kill_for_memory(self, name: str, pid: int, reason: str) -> None:
        node = self.tree.find_quiet(name)
        if isinstance(node, Worker) and node.pid == pid:
            log.warning("killing %s (pid %d): %s", name, pid, reason)
            self.shell.signal(pid, signal.SIGKILL)

    def _liveness(self, name: str) -> float:
        node = self.tree.find_quiet(name)
        return node.spec.liveness if isinstance(node, Worker) else 10.0

    def _mailbox_bound(self, name: str) -> int:
        node = self.tree.find_quiet(name)
        return node.spec.mailbox if isinstance(node, Worker) else 1

    def _apply(self, actions: list[Action]) -> None:
        """Carry out the core's actions; the events they cause go straight back into the core."""
        queue = deque(actions)
        while queue:
            self._act(queue.popleft())
            while self._pending:
                queue.extend(self.tree.handle(self._pending.popleft()))
        self._check_waiters()
        self._after_apply()
        if self._memory_poke:  # after the batch: the tree has recorded the new pids by now
            self._memory_poke = False
            self.memory.poke()

    def _act(self, action: Action) -> None:
        match action:
            case Spawn(name, spec):
                self._child_status.pop(name, None)  # what the last run reported (ERRNO=, EXIT_STATUS=)
                try:
                    pid = self.shell.spawn(spec, self._spawn_env(name, spec))
                except SpawnError as exc:
                    self._pending.append(SpawnFailed(name, str(exc)))
                else:
                    self._memory_poke = self._memory_poke or spec.max_memory is not None
                    two_step = bool(spec.agent) or spec.ready == "notify"
                    self._pending.append(Spawned(name, pid, ready=not two_step))
            case Signal(_, pid, sig):
                self.shell.signal(pid, sig)
            case StartTimer(token, delay):
                self._timers[token] = self.loop.call_later(delay, lambda t=token: self._fire(t))
            case CancelTimer(token):
                handle = self._timers.pop(token, None)
                if handle is not None:
                    handle.cancel()
            case Log(level, message):
                log.log(LEVELS.get(level, logging.INFO), "%s", message)
            case Removed(names):
                for name in names:
                    self.logs.forget(name)
                    self._child_status.pop(name, None)
                    if self.broker is not None:
                        self.broker.forget(name)
            case Halt(code, reason):
                log.log(logging.INFO if code == 0 else logging.ERROR, "halting: %s", reason)
                self._exit_code = code
                self.loop.stop()

    def _spawn_env(self, name: str, spec: WorkerSpec) -> dict[str, str]:
        """What the daemon adds to a child's environment: its broker endpoint and token, its NOTIFY_SOCKET."""
        identity = self.shell.identity(spec)  # (uid, gid) of a child with user=, else None; SpawnError if unknown
        if identity is not None and (spec.agent or spec.ready == "notify"):
            self._share_dirs(name, spec, *identity)
        extra = {}
        if spec.agent and self.broker is not None:
            token = self.broker.expect(name)
            try:
                endpoint = self.broker.endpoint_for(*identity) if identity is not None else self.broker.endpoint
            except OSError as exc:
                raise SpawnError(f"no broker socket for user {identity}: {exc}") from exc
            extra = {"FOUNDATION_BROKER": endpoint, "FOUNDATION_AGENT_TOKEN": token}
        if spec.ready == "notify" and self.child_notify is not None:
            extra["NOTIFY_SOCKET"] = str(self.child_notify.path)
            if spec.watchdog is not None:  # what sd_watchdog_enabled(3) reads to know it must ping
                extra["WATCHDOG_USEC"] = str(round(spec.watchdog * 1_000_000))
        return extra

    def _share_dirs(self, name: str, spec: WorkerSpec, uid: int, gid: int) -> None:
        """A child running as another user must reach its sockets and, for an agent, own its state directory.

        The runtime and state directories become traversable (0711: nothing in them can be listed, and each
        socket keeps its own mode: control and broker 0600, notify 0666 behind a credential check). The agent's
        own state directory is handed to its user; files a root run left there are handed over first, while the
        directory is still root's, so nothing the user planted there can be followed.
        """
        try:
            for directory in (self.runtime_dir, self.state_dir) if spec.agent else (self.runtime_dir,):
                if directory.stat().st_uid == os.geteuid():
                    directory.chmod(directory.stat().st_mode & 0o7777 | 0o711)
            if spec.agent:
                self._hand_over_state_dir(name, uid, gid)
        except OSError as exc:
            raise SpawnError(f"cannot share the runtime or state directory with user {uid}: {exc}") from exc

    def _hand_over_state_dir(self, name: str, uid: int, gid: int) -> None:
        agents_dir = agent_state_path(self.state_dir, name).parent
        agents_dir.mkdir(mode=0o711, exist_ok=True)
        agents_dir.chmod(0o711)
        own = agent_state_path(self.state_dir, name)
        if not own.exists():
            own.mkdir(mode=0o700)
            fsync_dir(agents_dir)  # the agent cannot (it may not read agents_dir): its directory entry is durable
        owner = own.lstat().st_uid
        if owner == uid:
            return
        if owner != os.geteuid():  # another user's: what it left there is not ours to follow or hand on
            raise SpawnError(f"{own} belongs to uid {owner}, not to the agent's user {uid}: chown it by hand")
        for entry in own.iterdir():
            os.chown(entry, uid, gid, follow_symlinks=False)
        os.chown(own, uid, gid, follow_symlinks=False)

    def _fire(self, token: int) -> None:
        self._timers.pop(token, None)
        self._apply(self.tree.handle(TimerFired(token)))

    # ---- control verbs ----

    def _handlers(self) -> dict[str, Callable[[Request, Peer, Reply], None]]:
        return {
            "status": lambda req, peer, reply: reply(self.status()),
            "start": self._verb_node,
            "stop": self._verb_node,
            "restart": self._verb_node,
            "detach": self._verb_node,
            "attach": self._verb_attach,
            "shutdown": self._verb_shutdown,
            "state": self._verb_state,
            "logs": self._verb_logs,
            "reload": lambda req, peer, reply: self._reload(reply),
            "send": self._verb_send,
            "call": self._verb_call,
        }

    def status(self) -> dict[str, Any]:
        return {
            "daemon": {
                "pid": os.getpid(),
                "version": version(),
                "uptime_s": round(time.monotonic() - self.started_at, 3),
                "runtime_dir": str(self.runtime_dir),
                "state_dir": str(self.state_dir),
                "zygote": self.shell.zygote.describe(),
                "guardian": {"pid": self.shell.guardian.pid},
            },
            "tree": self._with_child_status(self.tree.snapshot()),
            "broker": self.broker.stats() if self.broker is not None else None,
        }

    def _with_child_status(self, node: dict[str, Any]) -> dict[str, Any]:
        """Add the STATUS= text that notify children reported to their entries (no walk when none did: the walk
        costs a tenth of a status at 1,000 children)."""
        if not self._child_status:
            return node
        if node["name"] in self._child_status:
            node.update(self._child_status[node["name"]])
        for child in node.get("children", ()):
            self._with_child_status(child)
        return node

    def _verb_node(self, req: Request, peer: Peer, reply: Reply) -> None:
        name = _str_arg(req.args, "name")
        node = self.tree.find(name)
        before = node.incarnation
        if req.verb == "start" and node.state is State.RUNNING:
            reply(self._describe(node))
            return
        if req.verb in ("start", "restart") and node.parent is not None:
            self._check_spawnable(node.spec)
        self._apply(self.tree.request(req.verb, name))
        if req.verb == "stop":
            done = lambda: node.state in DOWN  # noqa: E731
        elif req.verb == "detach":
            done = lambda: node.parent is None or node not in node.parent.children  # noqa: E731
        else:
            done = lambda: (  # noqa: E731
                node.incarnation > before and node.state not in (State.STARTING, State.STOPPING)
            ) or _parked(node)
        self._wait(done, lambda: self._describe(node), reply)

    def _check_spawnable(self, spec: ChildSpec) -> None:
        """Refuse an operator's start/attach of a command that cannot be spawned: each failed spawn counts as
        a crash, so it would loop synchronously through the restart intensity and fail up to the root."""
        for worker in _workers(spec):
            try:
                self.shell.check(worker)
            except SpawnError as exc:
                raise FoundationError(ErrorCode.SPAWN_FAILED, f"{worker.name}: {exc}") from None

    def _verb_attach(self, req: Request, peer: Peer, reply: Reply) -> None:
        parent = req.args.get("parent", "root")
        if not isinstance(parent, str):
            raise FoundationError(ErrorCode.BAD_REQUEST, "'parent' must be a string")
        try:
            spec = child_spec_from_dict(req.args.get("spec"), key="spec")
        except ConfigError as exc:
            raise FoundationError(ErrorCode.INVALID_SPEC, str(exc)) from None
        self._check_spawnable(spec)
        self._apply(self.tree.attach(parent, spec))
        node = self.tree.find(spec.name)
        self._wait(lambda: (node.incarnation > 0 and node.state is not State.STARTING) or _parked(node),
                   lambda: self._describe(node), reply)

    def _verb_logs(self, req: Request, peer: Peer, reply: Reply) -> None:
        """The last ``lines`` lines of a child's output; with ``follow``, then every new line as it comes."""
        name = _str_arg(req.args, "name")
        if self.tree.find_quiet(name) is None and name not in (forkserver.NAME, GUARDIAN_NAME):
            raise FoundationError(ErrorCode.NO_SUCH_CHILD, f"no child named {name!r}")
        count = req.args.get("lines", 50)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise FoundationError(ErrorCode.BAD_REQUEST, "'lines' must be a non-negative integer")
        tail = [{"t": t, "line": line} for t, line in self.logs.tail(name, count)]
        alive = reply({"name": name, "lines": tail, "more": bool(req.args.get("follow"))})
        if req.args.get("follow") and alive is not False:
            self.logs.follow(
                name, lambda lines: reply({"name": name, "lines": [{"line": x} for x in lines]}) is not False
            )

    def _verb_state(self, req: Request, peer: Peer, reply: Reply) -> None:
        """An agent's last committed state, read from its LMDB store (a short read transaction)."""
        name = _str_arg(req.args, "name")
        node = self.tree.find(name)
        if not isinstance(node, Worker) or not node.spec.agent:
            raise FoundationError(ErrorCode.NO_SUCH_AGENT, f"{name!r} is not an agent")
        path = agent_state_path(self.state_dir, name)
        if not (path / "data.mdb").exists():
            reply({"name": name, "state": None, "last_seq": 0})
            return
        try:
            with StateStore(path) as store:
                state, last_seq = store.load()
        except StateError as exc:
            raise FoundationError(ErrorCode.INTERNAL, f"cannot read the state of {name!r}: {exc}") from None
        reply({"name": name, "state": state, "last_seq": last_seq})

    def _verb_send(self, req: Request, peer: Peer, reply: Reply) -> None:
        """Cast one message; answered once the daemon has durably accepted it (after the group commit)."""
        assert self.broker is not None
        if "body" not in req.args:
            raise FoundationError(ErrorCode.BAD_REQUEST, "'body' is required (any JSON value)")
        producer, seq = req.args.get("producer"), req.args.get("seq")
        paired = isinstance(producer, str) and producer and isinstance(seq, int) and not isinstance(seq, bool)
        if (producer is not None or seq is not None) and not paired:
            raise FoundationError(ErrorCode.BAD_REQUEST, "'producer' (string) and 'seq' (integer) go together")
        self.broker.send(_str_arg(req.args, "name"), req.args["body"], _answer(reply, lambda mid: {"id": mid}),
                         producer=producer, seq=seq)

    def _verb_call(self, req: Request, peer: Peer, reply: Reply) -> None:
        assert self.broker is not None
        timeout = req.args.get("timeout", 5.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 3600:
            raise FoundationError(ErrorCode.BAD_REQUEST, "'timeout' must be a number of seconds in (0, 3600]")
        if "body" not in req.args:
            raise FoundationError(ErrorCode.BAD_REQUEST, "'body' is required (any JSON value)")
        self.broker.call(_str_arg(req.args, "name"), req.args["body"], float(timeout),
                         _answer(reply, lambda body: {"reply": body}))

    def _verb_shutdown(self, req: Request, peer: Peer, reply: Reply) -> None:
        reply({"stopping": True})
        self.loop.call_later(0, self._shutdown)

    # ---- reload ----

    def _reload(self, reply: Reply | None) -> None:
        """Re-read the config and apply the difference; an invalid config changes nothing.

        Removals first (so a moved name is free), then settings, replacements and additions; the answer and
        READY=1 come once every touched child has settled.
        """
        if self._reloading or self.tree.shutting_down or self.tree.root.state is State.STOPPING:  # (root failing)
            err = FoundationError(ErrorCode.BUSY, "a reload or shutdown is in progress")
            log.warning("reload ignored: %s", err.message)
            if reply is not None:
                reply(err)
            return
        log.info("reloading %s", self.config_path or "the embedded config")
        # RELOADING=1 ... READY=1 only once started: before that, READY=1 means the whole tree is up.
        announced = self._ready_sent
        if announced:
            self.notifier.reloading()
        try:
            new = load_config(self.config_path)
            plan = diff(self.config.root, new.root)
            self._check_plan(plan)
        except (ConfigError, FoundationError) as exc:
            log.error("reload refused, the running tree is unchanged: %s", exc)  # noqa: TRY400 (no traceback)
            if announced:
                self.notifier.ready()
            if reply is not None:
                reply(exc if isinstance(exc, FoundationError) else FoundationError(ErrorCode.INVALID_CONFIG, str(exc)))
            return
        self._reloading = True
        for name in plan.remove:
            if self.tree.find_quiet(name) is not None:
                self._apply(self.tree.request("detach", name))

        def removed() -> bool:
            return all(self.tree.find_quiet(name) is None for name in plan.remove)

        def phase2() -> None:
            try:
                for spec in plan.update:
                    self.tree.update_settings(spec)
                for worker in plan.replace:
                    self._apply(self.tree.replace(worker))
                for parent, index, spec in plan.add:
                    self._apply(self.tree.attach(parent, spec, index))
                for parent, order in plan.reorder:
                    self.tree.reorder(parent, order)
            except FoundationError as exc:  # a shutdown, or an operator's attach/detach, came in meanwhile
                log.error("reload stopped part-way: %s", exc)  # noqa: TRY400 (no traceback)
                self._reloading = False
                if announced and not self.tree.shutting_down:
                    self.notifier.ready()
                if reply is not None:
                    reply(exc)
                return
            touched = [self.tree.find_quiet(w.name) for w in plan.replace] + [
                self.tree.find_quiet(spec.name) for _, _, spec in plan.add
            ]
            self._when(lambda: all(n is None or n.state not in (State.STARTING, State.STOPPING) for n in touched),
                       finish)

        def finish() -> None:
            self.config = new
            self.shell.zygote.configure(new.fork_server)
            self._reloading = False
            if announced and not self.tree.shutting_down:  # no READY=1 after STOPPING=1
                self.notifier.ready()
            summary = plan.summary()
            log.info("reloaded: %s", summary)
            if reply is not None:
                reply(summary)

        self._when(removed, phase2)

    def _check_plan(self, plan: Plan) -> None:
        """Refuse, before anything changes, a plan that run-time attach/detach made impossible to carry out."""
        removed = [node for name in plan.remove if (node := self.tree.find_quiet(name)) is not None]
        freed = {n for node in removed for n in _node_names(node)}  # a removal frees its whole subtree's names
        for spec in (*plan.update, *plan.replace):
            node = self.tree.find_quiet(spec.name)
            if node is None or isinstance(node, Supervisor) != isinstance(spec, SupervisorSpec):
                raise FoundationError(ErrorCode.INVALID_CONFIG, f"{spec.name!r} changed in the config but was detached "
                                      "at run time: attach it again, or take it out of the config")
        for parent, _, spec in plan.add:
            if not isinstance(self.tree.find_quiet(parent), Supervisor):
                raise FoundationError(ErrorCode.INVALID_CONFIG, f"{spec.name!r} goes under {parent!r}, which was "
                                      "detached at run time: attach it again, or take it out of the config")
            for name in _spec_names(spec):
                if name not in freed and self.tree.find_quiet(name) is not None:
                    raise FoundationError(ErrorCode.INVALID_CONFIG, f"the config adds {name!r}, but a child of that "
                                          "name was attached at run time: detach it first")

    def _describe(self, node: Any) -> dict[str, Any]:
        return {"name": node.name, "state": str(node.state), "pid": getattr(node, "pid", None)}

    def _wait(self, done: Callable[[], bool], answer: Callable[[], Any], reply: Reply) -> None:
        waiter = Waiter(done, answer, reply)
        if done():
            reply(answer())
            return
        self._waiters.append(waiter)
        waiter.timer = self.loop.call_later(WAIT_LIMIT, lambda: self._expire(waiter))

    def _when(self, done: Callable[[], bool], then: Callable[[], None]) -> None:
        """Run ``then`` once ``done()`` holds (checked after every batch of events); no deadline."""
        if done():
            then()
        else:
            self._waiters.append(Waiter(done, then, lambda _: None))

    def _expire(self, waiter: Waiter) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)
            waiter.reply({**waiter.answer(), "pending": True})

    def _check_waiters(self) -> None:
        for waiter in [w for w in self._waiters if w.done()]:
            if waiter not in self._waiters:  # answered already by a nested check (a `_when` callback applies actions)
                continue
            self._waiters.remove(waiter)
            if waiter.timer is not None:
                waiter.timer.cancel()
            waiter.reply(waiter.answer())


def _parked(node: Any) -> bool:
    """Down under a supervisor that is down: the core starts it with its supervisor, so waiting is pointless."""
    return node.state in DOWN and node.parent is not None and node.parent.state in DOWN


def _spec_names(spec: ChildSpec) -> list[str]:
    if isinstance(spec, SupervisorSpec):
        return [spec.name, *(n for child in spec.children for n in _spec_names(child))]
    return [spec.name]


def _node_names(node: AnyNode) -> list[str]:
    if isinstance(node, Supervisor):
        return [node.name, *(n for child in node.children for n in _node_names(child))]
    return [node.name]


def _workers(spec: ChildSpec) -> list[WorkerSpec]:
    if isinstance(spec, SupervisorSpec):
        return [worker for child in spec.children for worker in _workers(child)]
    return [spec]


def _answer(reply: Reply, shape: Callable[[Any], Any]) -> Callable[[Any, FoundationError | None], None]:
    """Adapt the broker's (result, error) callback to a control reply."""

    def respond(result: Any, err: FoundationError | None) -> None:
        reply(err if err is not None else shape(result))

    return respond


def _total_restarts(node: AnyNode) -> int:
    if isinstance(node, Supervisor):
        return sum(_total_restarts(c) for c in node.children)
    return node.restarts


def _has_agents(spec: SupervisorSpec) -> bool:
    return any(_has_agents(c) if isinstance(c, SupervisorSpec) else bool(c.agent) for c in spec.children)


def _str_arg(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value:
        raise FoundationError(ErrorCode.BAD_REQUEST, f"'{key}' must be a non-empty string")
    return value


# ---- entry point ----


def _prepare_dir(path: Path, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    if path.stat().st_uid == os.getuid():
        path.chmod(mode)


def _lock_runtime_dir(runtime_dir: Path) -> int:
    """One daemon per runtime directory: a second one would steal the control socket."""
    fd = os.open(runtime_dir / "foundationd.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SystemExit(f"foundationd: another foundationd is running with runtime dir {runtime_dir}") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _raise_fd_limit() -> None:
    # Each worker holds a pidfd and an output pipe; the default soft limit of 1024 caps a fleet at ~500.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))


def _setup_logging() -> tuple[OutputSink, OutputSink]:
    """Both outputs go through non-blocking sinks: a reader that stalls must not stall the loop."""
    out, err = OutputSink(sys.stdout.fileno()), OutputSink(sys.stderr.fileno())
    journal = stderr_is_journal()
    handler = SinkHandler(err, journal)
    handler.setFormatter(logging.Formatter("%(message)s" if journal else "foundationd: %(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    _lighter_log_records()
    return out, err


def _lighter_log_records() -> None:
    """Every child started or stopped is a log line (500 at a cold start of 500). A record looks up its thread,
    process, multiprocessing process and calling frame, about a fifth of its cost, and no format here shows any
    of them: the switches of the logging HOWTO's "Optimization" section turn the lookups off."""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # the documented switch for the caller lookup




def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="foundationd", description="Foundation's supervision daemon.")
    parser.add_argument("--config", help="TOML config (default: the embedded demo tree)")
    parser.add_argument("--runtime-dir", help="directory for the control socket")
    parser.add_argument("--state-dir", help="directory for persistent state")
    parser.add_argument("--version", action="version", version="foundationd " + version())
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    # A wedged loop killed by systemd's watchdog (SIGABRT) leaves its Python traceback in the journal.
    faulthandler.enable()
    args = parse_args(argv)
    sinks = _setup_logging()
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"foundationd: invalid config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    runtime_dir = paths.runtime_dir(args.runtime_dir, config.runtime_dir)
    state_dir = paths.state_dir(args.state_dir, config.state_dir)
    try:
        _prepare_dir(runtime_dir, 0o700)
        _prepare_dir(state_dir, 0o700)
    except OSError as exc:
        print(f"foundationd: cannot prepare directories: {exc}", file=sys.stderr)
        return EXIT_FAILED
    lock_fd = _lock_runtime_dir(runtime_dir)
    _raise_fd_limit()
    try:
        return Daemon(config, runtime_dir, state_dir, sinks, config_path=args.config).run()
    finally:
        os.close(lock_fd)


if __name__ == "__main__":
    raise SystemExit(main())
