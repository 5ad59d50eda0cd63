"""foundationd's wiring: which part hears what, and where the core's decisions go. No decisions here.

    SIGTERM/INT/HUP/CHLD ─┐                                   ┌─> ProcessShell: spawn, signal, reap ──┐
    pidfds, output pipes ─┤                                   │   (zygote, guardian, exec helper)     │ Exited,
    notify socket ────────┼─> EventLoop ─> App.apply(events) ─┤                                       │ Spawned,
    broker socket ────────┤   (one poll)    │  ^              ├─> timers (loop.call_later) ───────────┤ Ready,
    control socket ───────┘                 v  │              ├─> log, Removed -> forget, Halt        │ TimerFired
                                 SupervisionTree (pure core)  └─> core events -> Observability <──────┘
                                            │ actions
    control verbs (daemon/control/verbs/*) ─┴─> tree requests, Waiters (answer when settled), PlanRunner (reload)
    broker (daemon/broker/) <── agent hello = Ready; agent exit -> broker.agent_exited; tree -> mailbox bounds

Every event goes into the core, whose actions ``apply`` carries out, feeding their events straight back; then it
checks waiters and tells systemd. Parts: daemon/shell, daemon/broker, daemon/control, daemon/services.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import time
from collections import deque
from pathlib import Path
from typing import Any

from daemon import version
from daemon.broker.broker import Broker
from daemon.config import DaemonConfig
from daemon.control.server import ControlServer, Reply
from daemon.control.verbs import VERBS
from daemon.control.waiters import Waiters
from daemon.core.protocol import (
    Action,
    CancelTimer,
    Event,
    Exited,
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
from daemon.core.spec import ChildSpec, WorkerSpec, worker_specs
from daemon.core.states import State
from daemon.core.tree import SupervisionTree, Worker
from daemon.services.flags import FlagService
from daemon.services.observability import Observability
from daemon.services.plan_runner import PlanRunner
from daemon.services.reload import Reloader
from daemon.services.resilience import Resilience
from daemon.services.state_reader import StateReaders
from daemon.services.systemd_status import SystemdStatus
from daemon.services.tree_queries import TreeQueries
from daemon.services.upgrade import Upgrader
from daemon.services.workflows import WorkflowSide
from daemon.shell import forkserver
from daemon.shell.child_notify import ChildNotifySocket
from daemon.shell.child_output import ChildOutput
from daemon.shell.child_watchdog import ChildReports
from daemon.shell.loop import EventLoop, TimerHandle
from daemon.shell.memory import MemoryWatch
from daemon.shell.notify import Notifier
from daemon.shell.output import OutputSink
from daemon.shell.process import ProcessShell, SpawnError, become_subreaper
from daemon.shell.spawn_env import SpawnEnv
from ipc.errors import ErrorCode, FoundationError

log = logging.getLogger("foundationd")

EXIT_OK = 0
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "notice": logging.INFO,
          "warning": logging.WARNING, "error": logging.ERROR}


class App:
    def __init__(self, config: DaemonConfig, runtime_dir: Path, state_dir: Path,
                 sinks: tuple[OutputSink, ...] = (), config_path: str | None = None) -> None:
        self.config, self.runtime_dir, self.state_dir, self._sinks = config, runtime_dir, state_dir, sinks
        self.config_path = config_path
        self.attached: dict[str, tuple[str, dict[str, Any]]] = {}  # run-time attaches, for `save`
        self.started_at = time.monotonic()
        self.loop = EventLoop()
        self.tree = SupervisionTree(config.root, self.loop.clock)
        self.output = ChildOutput(sinks[0] if sinks else None, config.logs)  # to stdout, the rings, the files
        self.logs, self.start_causes = self.output.rings, self.output.start_causes  # (for the logs and attach verbs)
        self.shell = ProcessShell(self.loop.add_reader, self.loop.remove_reader, self._on_exit, self.output.lines,
                                  base_env={"FOUNDATION_RUNTIME_DIR": str(runtime_dir),
                                            "FOUNDATION_STATE_DIR": str(state_dir)},
                                  fork_server=config.fork_server)
        self.notifier = Notifier()
        self.systemd = SystemdStatus(self.notifier, self.tree, self.loop.clock, self.loop.call_later)
        self.queries = TreeQueries(self.tree, self.shell.signal)
        self.memory = MemoryWatch(self.loop.call_later, self.queries.memory_watched, self.queries.kill_for_memory)
        self._memory_poke = False
        self.states = StateReaders(state_dir)
        self.reports = ChildReports(self.tree, self.loop.call_later, self.shell.signal, self.feed)
        self.spawn_env = SpawnEnv(runtime_dir, state_dir, self.shell)
        self.waiters = Waiters(self.loop.call_later)
        self.wait, self.send_signal = self.waiters.wait, self.shell.signal  # (for verbs)
        self.reloader = Reloader(tree=self.tree, runner=PlanRunner(self.tree, self.apply, self.waiters),
                                 notifier=self.notifier, config_path=config_path,
                                 is_ready=lambda: self.systemd.ready_sent, adopt=self.adopt_config)
        self.obs = Observability(self)  # events, restart history, metrics, doctor (daemon/services/observability.py)
        self.workflows, self.flags = WorkflowSide(self, state_dir), FlagService(self, state_dir)  # (flags: migrations)
        self.resilience, self.upgrader = Resilience(self), Upgrader(self)  # issue 14; in-place upgrade (issue 19)
        self.control: ControlServer | None = None
        self.broker: Broker | None = None
        self.child_notify: ChildNotifySocket | None = None
        self._timers: dict[int, TimerHandle] = {}
        self._pending: deque[Event] = deque()
        self._exit_code = EXIT_OK

    # ---- lifecycle ----

    def run(self) -> int:
        become_subreaper()
        logging.getLogger().addHandler(self.output.daemon_log)
        for sink in self._sinks:
            sink.attach(self.loop.add_writer, self.loop.remove_writer)
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(signum, self.shutdown)
        self.loop.add_signal_handler(signal.SIGCHLD, lambda _: self.shell.reap())
        self.loop.add_signal_handler(signal.SIGHUP, lambda _: self.reload(None))
        self.loop.add_signal_handler(signal.SIGUSR2, self.upgrader.on_signal)
        self.child_notify = ChildNotifySocket(self.runtime_dir, self.loop.add_reader, self.loop.remove_reader,
                                              self.reports.child_of, self.reports.on_notify)
        self.shell.before_reap = self.child_notify.drain
        q = self.queries
        self.broker = Broker(self.runtime_dir, self.state_dir, self.loop, agent_alive=q.agent_alive,
                             kill=q.kill_agent, mailbox_bound=q.mailbox_bound, liveness=q.liveness,
                             on_hello=self._on_agent_hello, services=self.resilience.frames)
        self.spawn_env.broker, self.spawn_env.notify = self.broker, self.child_notify
        self.obs.start()
        self.flags.start()  # before the tree boots: an agent's welcome carries the flag table
        self.upgrader.start_guardian()  # before the first child: a SIGKILLed daemon leaves no process group behind
        if agents := sum(1 for w in worker_specs(self.config.root) if w.agent):  # the zygote imports the SDK meanwhile
            self.shell.start_zygote(agents)
        handlers = {name: functools.partial(verb.handle, self) for name, verb in VERBS.items()}
        self.control = ControlServer(self.runtime_dir, handlers, self.loop, self.config.control_group)
        log.info("foundationd %s (pid %d) starting; control socket %s", version(), os.getpid(), self.control.path)
        self.systemd.start_watchdog()
        if not self.config.root.children:
            log.warning("the config has no children: the tree is empty (add [[supervisor.children]], or attach)")
        try:
            if self.shell.zygote.state == "booting" and not self.upgrader.adopting:  # agents: from spares, not exec
                self.shell.zygote.wait_for_spare(forkserver.BOOT_WAIT)
            self.apply(self.tree.boot())
            self.workflows.booted()  # (durable children attached again: an upgrade adopts them too)
            self.upgrader.booted()
            self.loop.run()
        finally:
            self._close()
        return self._exit_code

    def _close(self) -> None:
        for part in (self.memory, self.control, self.shell, self.output, self.broker, self.child_notify, self.states,
                     self.notifier, self.workflows, self.flags, self.obs, self.resilience):
            if part is not None:
                part.close()
        for sink in self._sinks:
            sink.flush()
            sink.detach()
        self.loop.close()
        logging.getLogger().removeHandler(self.output.daemon_log)

    def shutdown(self, signum: int | None = None) -> None:
        if signum is not None:  # SIGTERM, SIGINT
            log.info("received %s", signal.Signals(signum).name)
        if not self.tree.shutting_down:
            self.notifier.stopping()
        self.apply(self.tree.shutdown())

    def shutdown_soon(self) -> None:
        self.loop.call_later(0, self.shutdown)

    def reload(self, reply: Reply | None) -> None:
        self.reloader.reload(self.config, reply)

    def adopt_config(self, new: DaemonConfig) -> None:
        self.config = new
        self.shell.zygote.configure(new.fork_server)
        self.output.configure(new.logs)
        self.shell.clear_credentials()  # (users and groups looked up again at their next spawn)
        self.flags.configure(new)

    def feed(self, event: Event) -> None:
        self.apply(self.tree.handle(event))

    def _on_agent_hello(self, name: str) -> None:
        node = self.tree.find_quiet(name)
        if isinstance(node, Worker) and node.pid is not None:
            self.reports.started(name)
            self.start_causes.pop(name, None)
            self.feed(Ready(name, node.pid))

    def _on_exit(self, event: Exited) -> None:
        node = self.tree.find_quiet(event.name)
        if isinstance(node, Worker) and node.pid == event.pid:
            self.reports.exited(event.name, self.output.exited(event.name, event.describe(),
                                                               starting=node.state is State.STARTING))
            if self.broker is not None and node.spec.agent:
                self.broker.agent_exited(event.name, event.describe())
            self.workflows.exited(event)
        self.feed(event)

    def _fire(self, token: int) -> None:
        self._timers.pop(token, None)
        self.feed(TimerFired(token))

    # ---- the core's actions out ----

    def apply(self, actions: list[Action]) -> None:
        """Carry out the core's actions; the events they cause go straight back into the core."""
        queue = deque(actions)
        while queue:
            self._act(queue.popleft())
            while self._pending:
                queue.extend(self.tree.handle(self._pending.popleft()))
        self.obs.on_core_events(self.tree.take_events())  # the core's typed events: stream, history, metrics
        self.waiters.check()
        self.systemd.after_batch()
        if self._memory_poke:  # after the batch: the tree has recorded the new pids by now
            self._memory_poke = False
            self.memory.poke()

    def _act(self, action: Action) -> None:
        match action:
            case Spawn(name, spec):
                self._spawn(name, spec)
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
                    self._forget(name)
            case Halt(code, reason):
                log.log(logging.INFO if code == 0 else logging.ERROR, "halting: %s", reason)
                self._exit_code = code
                self.loop.stop()

    def _spawn(self, name: str, spec: WorkerSpec) -> None:
        self.reports.forget(name, keep_error=True)  # what the last run reported (ERRNO=, EXIT_STATUS=)
        try:
            pid = self.upgrader.adopt(name) or self.shell.spawn(spec, self.spawn_env.extra(name, spec))
        except SpawnError as exc:
            self._pending.append(SpawnFailed(name, str(exc)))
            return
        self.output.started(spec, pid)
        self._memory_poke = self._memory_poke or spec.max_memory is not None
        two_step = bool(spec.agent) or spec.ready == "notify"
        self._pending.append(Spawned(name, pid, ready=not two_step))

    def _forget(self, name: str) -> None:
        self.output.forget(name)
        self.attached.pop(name, None)
        self.reports.forget(name)
        self.spawn_env.forget(name)
        self.states.forget(name)
        self.workflows.removed(name)
        if self.broker is not None:
            self.broker.forget(name)

    # ---- what verbs and the broker ask ----

    def check_spawnable(self, spec: ChildSpec) -> None:
        """Refuse an operator's start/attach of a command that cannot be spawned: each failed spawn counts as
        a crash, so it would loop synchronously through the restart intensity and fail up to the root."""
        for worker in worker_specs(spec):
            try:
                self.shell.check(worker)
            except SpawnError as exc:
                raise FoundationError(ErrorCode.SPAWN_FAILED, f"{worker.name}: {exc}") from None

    def status(self) -> dict[str, Any]:
        return {
            "daemon": {
                "pid": os.getpid(), "version": version(), "uptime_s": round(time.monotonic() - self.started_at, 3),
                "runtime_dir": str(self.runtime_dir), "state_dir": str(self.state_dir),
                "zygote": self.shell.zygote.describe(), "guardian": {"pid": self.shell.guardian.pid},
                "spawn": self.shell.spawn_path, **self.obs.describe(),
            },
            "tree": self.reports.with_reports(self.tree.snapshot()),
            "broker": self.broker.stats() if self.broker is not None else None,
        }

