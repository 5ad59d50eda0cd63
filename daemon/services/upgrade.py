"""In-place upgrade: ``foundationctl upgrade`` or SIGUSR2 re-executes the foundationd now installed, same pid.

    old image: upgrade ─> refuse? (a child mid-transition, a run-time attach nothing brings back, an agent that
               cannot resume, a config edited on disk, a new image that does not import)
               └─> RELOADING=1, pending calls failed and the broker's turn committed, Handover written
                   (daemon/core/handover.py, the broker's part daemon/broker/resume.py), fds inheritable, sockets
                   and LMDB closed (the broker lingers until all it sent is out), the zygote and spares ended
                   ─> execve(sys.executable, original argv + --adopt FILE)
    new image: main --adopt FILE ─> Upgrader.load ─> guardian kept (same pipe), the broker's sessions, mailboxes,
               timers and monitors taken back, each boot Spawn answered by the running pid (durable dynamic
               children too, as workflows attach them again), restart counts and intensity histories put back,
               READY=1; a fresh zygote (the new code's) starts without holding up the boot; each agent resumes
               at its first frame (daemon/broker/resume.py)
               adoption fails ─> execve again with the handover marked ``failed``: that image adopts without the
               failing step, reports the error to ``upgrade --wait``; nothing restarted either way.

Down children (stopped by the operator, ended, failed, parked) stay down as they were, one waiting out its backoff is
restarted when it is due; children attached at run time come back at their place: durable ones through workflows,
an operator's ``attach`` and a workflow's running command step (its record's boot id and its timeout kept) from the
handover. Still refused (``busy``, with the reason): a
child mid-transition, a dynamic child nothing attaches again or that is down, an agent whose runtime predates
resuming, a supervisor in the middle of a plan (a group restart or its backoff sleep).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from daemon.broker import resume
from daemon.config import ConfigError, child_spec_from_dict, load_config
from daemon.core import handover as ho
from daemon.core.protocol import Ready
from daemon.core.reload import diff as reload_diff
from daemon.core.spec import WorkerSpec, worker_specs
from daemon.core.states import DOWN, State
from daemon.core.tree import Supervisor, Worker, spec_names
from daemon.shell import forkserver
from daemon.shell.process import GUARDIAN_NAME, OutputPipe, ProcessHandle
from ipc.errors import ErrorCode, FoundationError

if TYPE_CHECKING:
    from daemon.app import App
    from daemon.control.verbs.base import Reply

log = logging.getLogger("foundationd")

# For tests: "adopt" makes the new image fail as it reads the handover, "booted" raise once the tree is adopted.
FAIL_VARIABLE = "FOUNDATION_UPGRADE_FAIL"
PRECHECK_TIMEOUT = 60.0
BROKER_LINGER_MS = 2000  # ample for local agents, which read their socket from ZeroMQ's own thread
T = TypeVar("T")
# Blocked from just before the exec until the new image's loop has its handlers: one arriving meanwhile stays
# pending (execve keeps the mask and pending signals) instead of killing the new image or being lost.
EXEC_BLOCKED = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2, signal.SIGCHLD})


class Upgrader:
    def __init__(self, app: App) -> None:
        self._app = app
        self.generation = 0
        self.last: dict[str, Any] | None = None  # the last upgrade's result, for `upgrade --wait`
        self._handover: ho.Handover | None = None
        self._adopt: dict[str, ho.HandedWorker] = {}
        self._adopted: dict[str, int] = {}
        self._path: Path | None = None
        self._under_way = False
        self._mask: set[int | signal.Signals] = set()  # the signal mask before the exec's block

    # ---- the old image ----

    def request(self, reply: Reply | None) -> None:
        """The verb's (or SIGUSR2's) request: refuse at once, or answer and exec after this loop turn."""
        why = self.refusal()
        if why is None:
            why = self._precheck()
        if why is not None:
            log.error("upgrade refused: %s", why)
            if reply is not None:
                raise FoundationError(ErrorCode.BUSY, f"upgrade refused: {why}")
            return
        if reply is not None:
            reply({"upgrading": True, "pid": os.getpid(), "generation": self.generation})
        self._under_way = True
        self._app.loop.call_later(0, self._go)

    def _go(self) -> None:
        """After the loop turn: the tree may have moved since the request (a child exited); check again."""
        self._under_way = False
        self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, EXEC_BLOCKED)
        if self._app.loop.signals_waiting():  # heard, not yet handled: handle them first, then try again
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)
            self._under_way = True
            self._app.loop.call_later(0, self._go)
            return
        why = self.refusal()
        if why is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)
            self.generation += 1
            self.last = {"generation": self.generation, "ok": False, "error": f"upgrade refused: {why}",
                         "children": 0, "took_ms": 0.0}
            log.error("upgrade %d refused: %s", self.generation, why)
            return
        self._execute()

    def on_signal(self, _signum: int) -> None:
        log.info("received SIGUSR2: upgrading in place")
        self.request(None)

    def refusal(self) -> str | None:
        """Why the tree cannot be handed over as it is, or None. The new image boots the config's tree and answers
        each start with the running process: anything else in the tree would come back different."""
        app = self._app
        if self._under_way:
            return "an upgrade is already under way"
        if app.tree.shutting_down:
            return "foundationd is shutting down"
        configured = set(spec_names(app.config.root))
        owners: dict[str, str | None] = {}  # dynamic node -> who brings it back in the new image (None: nobody)
        for parent, _, node in _walk(app.tree.root):
            if node.state in (State.STARTING, State.STOPPING):
                return f"{node.name} is {node.state.value}: wait until the tree has settled"
            if isinstance(node, Supervisor) and (node.plan or node.waiting is not None or node.inbox):
                return f"{node.name} is restarting or stopping children: wait until the tree has settled"
            if node.backoff_timer is not None and self._restart_due(node) is None:
                return f"{node.name} waits to be restarted: wait until it has been"
            if node.name in configured:
                continue
            owner = self._owner(node) or (owners.get(parent.name) if parent is not None else None)
            owners[node.name] = owner
            if owner is None:
                return (f"{node.name} was attached at run time, not by `attach`, not durable and not a workflow's "
                        "command step: it cannot be handed over (wait until it has ended, or detach it)")
            if node.state in DOWN:
                return (f"{node.name} was attached at run time and is {node.state.value}: the new image would start "
                        "it (start or detach it first)")
        for node in app.tree.workers():
            base = self._base_spec(node)
            if base is not None and base != node.spec and _versioned(base, node.spec) != node.spec:
                return (f"{node.name} runs a spec that differs from its config's in more than its version: reload "
                        "first")
        agents = [n.name for n in app.tree.workers() if n.spec.agent]
        if agents and app.broker is not None and (why := resume.refusal(app.broker, agents)) is not None:
            return why
        try:
            on_disk = load_config(app.config_path)
        except ConfigError as exc:
            return f"the config no longer loads: {exc}"
        if not reload_diff(app.config.root, on_disk.root).empty:
            return "the config on disk differs from the running tree: reload first (or restore the file)"
        return None

    def _base_spec(self, node: Worker) -> WorkerSpec | None:
        """The spec the new image builds for ``node`` before the handover's versions: its config's, or its attach's
        when it was attached on its own (not inside an attached supervisor); None when that is not known here."""
        app = self._app
        configured = {w.name: w for w in worker_specs(app.config.root)}
        if node.name in configured:
            return configured[node.name]
        raw = app.workflows.durable.spec(node.name) or app.attached.get(node.name, (None, None))[1]
        if raw is None and (task := app.workflows.tasks.handed(node.name)) is not None:
            raw = task[0]
        try:
            spec = child_spec_from_dict(raw, key="spec") if raw else None
        except ConfigError:
            return None
        return spec if isinstance(spec, WorkerSpec) else None

    def _restart_due(self, node: Supervisor | Worker) -> float | None:
        """When a child waiting out its backoff is due to start (monotonic), or None."""
        handle = self._app._timers.get(node.backoff_timer) if node.backoff_timer is not None else None
        return handle.deadline if handle is not None and not handle.cancelled else None

    def _owner(self, node: Supervisor | Worker) -> str | None:
        """Who attaches dynamic ``node`` again in the new image: workflows (durable), this (an operator's attach,
        a command step), or nobody (None)."""
        app = self._app
        if app.workflows.durable.spec(node.name) is not None:
            return "durable"
        if node.name in app.attached:
            return "operator"
        if isinstance(node, Worker) and app.workflows.tasks.handed(node.name) is not None:
            return "task"
        return None

    def _precheck(self) -> str | None:
        """The installed image must at least import and read this format: else nothing is exec'd."""
        code = "import daemon.app, daemon.core.handover as h; print(h.VERSION)"
        try:
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                                 timeout=PRECHECK_TIMEOUT, cwd=os.getcwd())
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"the installed foundationd cannot be checked: {exc}"
        if out.returncode != 0:
            lines = out.stderr.strip().splitlines()
            return f"the installed foundationd does not start: {lines[-1] if lines else out.returncode}"
        if out.stdout.strip() != str(ho.VERSION):
            return f"the installed foundationd reads handover format {out.stdout.strip()}, not {ho.VERSION}"
        return None

    def collect(self) -> ho.Handover:
        app = self._app
        live = app.shell.live
        workers = []
        for node in app.tree.workers():
            handle = live.get(node.pid) if node.pid is not None else None
            if handle is not None:
                workers.append(ho.HandedWorker(node.name, handle.pid, handle.pidfd,
                                               tuple((p.fd, p.stream) for p in handle.pipes), node.restarts))
        sups = [ho.HandedSupervisor(s.name, s.restarts, s.history) for s in _supervisors(app.tree.root)]
        guardian = None
        link = app.shell.guardian
        g = live.get(link.pid) if link.pid is not None else None
        if g is not None and link.fd >= 0:
            guardian = ho.HandedGuardian(g.pid, g.pidfd, link.fd, tuple(sorted(link.groups)),
                                         tuple((p.fd, p.stream) for p in g.pipes))
        broker = resume.snapshot(app.broker) if app.broker is not None else None
        down, attached = [], []
        for parent, index, node in _walk(app.tree.root):
            if node.state in DOWN:
                down.append(ho.HandedDown(node.name, node.state.value, node.held, node.restarts,
                                          getattr(node, "last_exit", None), getattr(node, "last_exit_at", None),
                                          self._restart_due(node), getattr(node, "backoff_attempt", 0)))
            owner = None if parent is None else self._owner(node)
            if owner == "operator":
                attached.append(ho.HandedAttach(parent.name, index, app.attached[node.name][1]))
            elif owner == "task" and (task := app.workflows.tasks.handed(node.name)) is not None:
                attached.append(ho.HandedAttach(parent.name, index, task[0], "task", True, task[1]))
        versions = {node.name: {"agent": node.spec.agent, "env": [list(kv) for kv in node.spec.env]}
                    for node in app.tree.workers() if (base := self._base_spec(node)) is not None and base != node.spec}
        return ho.Handover(self.generation + 1, tuple(sys.orig_argv), tuple(workers), tuple(sups), guardian,
                           started_at=time.monotonic(), broker=broker, down=tuple(down), attached=tuple(attached),
                           tasks_boot=app.workflows.tasks.boot, versions=versions)

    def _execute(self, failed: str | None = None, h: ho.Handover | None = None) -> None:
        app = self._app
        app.notifier.reloading()
        if h is None:
            if app.broker is not None:  # calls answered, the turn committed: the snapshot is what is on disk
                failed_calls = resume.settle(app.broker)
                if failed_calls:
                    log.warning("upgrade: %d pending call(s) failed (upgrading: call again)", failed_calls)
            self._end_zygote()  # (before collect: the guardian's list handed over is without them)
            h = self.collect()
            h.extra["mask"] = sorted(int(s) for s in self._mask)
        if failed is not None:
            h = replace(h, failed=failed)
        path = app.state_dir / ho.FILE_NAME
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(ho.to_plain(h), sort_keys=True))
        os.replace(tmp, path)
        for fd in h.fds():
            os.set_inheritable(fd, True)
        if failed is None:
            self._close_parts()
        log.info("upgrade: handing %d children over to the installed foundationd (same pid %d)",
                 len(h.workers), os.getpid())
        for sink in app._sinks:  # the log lines so far, before the image goes
            sink.flush()
        argv = ho.adopt_argv(list(h.argv), str(path))
        os.execve(sys.executable, argv, dict(os.environ))

    def _close_parts(self) -> None:
        """What holds sockets or LMDB environments the new image opens again; never the children."""
        app = self._app
        if app.broker is not None:
            app.broker.close(linger=BROKER_LINGER_MS)  # what it sent reaches the agents before the exec
        for part in (app.memory, app.control, app.child_notify, app.states, app.workflows, app.flags,
                     app.obs, app.resilience):
            if part is not None:
                part.close()

    def _end_zygote(self) -> None:
        """The zygote and its spares hold the old code: they are killed here and taken off the guardian's list (their
        groups are gone; a later group of the same id must not be killed by it), and the new image starts a zygote
        of its own and reaps these as the unknown children they are then. Not reaped here: a reap would also
        collect a worker that has just exited, whose exit this image must leave to the next. Agents already forked
        from them are children like any other."""
        shell = self._app.shell
        shell.zygote.close()
        for handle in [h for h in shell.live.values() if h.name in (forkserver.NAME, forkserver.SPARE_NAME)]:
            shell.signal(handle.pid, signal.SIGKILL)
            shell.guardian.remove(handle.pid)

    # ---- the new image ----

    def load(self, path: str) -> None:
        """Read the handover (before run): a format this image does not read falls back, as a failed adoption."""
        self._path = Path(path)
        try:
            h = ho.from_plain(json.loads(self._path.read_text()))
        except (OSError, ValueError, ho.HandoverError) as exc:
            raise SystemExit(f"foundationd: cannot adopt {path}: {exc}") from None
        self._handover = h
        self.generation = h.generation
        if h.failed is None and os.environ.get(FAIL_VARIABLE) == "adopt":
            self._fall_back(f"{FAIL_VARIABLE}=adopt: the new image failed at adoption (test)")
        self._adopt = {w.name: w for w in h.workers}

    @property
    def adopting(self) -> bool:
        """This image was started to adopt a tree (until it has)."""
        return self._handover is not None

    def start_guardian(self) -> None:
        """At boot: the guardian handed over keeps its pipe (no EOF, nothing killed); else a new one. The broker's
        state comes back here too, before the tree boots and anything is sent."""
        self._guarded(self._start_guardian)
        h = self._handover
        if h is not None and h.broker is not None and self._app.broker is not None:
            broker, state = self._app.broker, h.broker
            self._guarded(lambda: resume.restore(broker, state))
        if h is not None:
            self._guarded(lambda: self._before_boot(h))

    def _before_boot(self, h: ho.Handover) -> None:
        """What was down stays down: the boot skips it (held until ``booted`` puts its own state back)."""
        for d in h.down:
            node = self._app.tree.find_quiet(d.name)
            if node is not None:
                node.held = True
        if h.tasks_boot is not None:
            self._app.workflows.tasks.adopt_boot(h.tasks_boot)

    def _start_guardian(self) -> None:
        h = self._handover
        if h is not None:  # the mask the old image had before the exec (run() has installed its handlers by now)
            signal.pthread_sigmask(signal.SIG_SETMASK, [int(s) for s in h.extra.get("mask", [])])
        shell = self._app.shell
        if h is None or h.guardian is None:
            shell.start_guardian()
            return
        g, link = h.guardian, shell.guardian
        link.adopt(g.pid, g.write_fd, set(g.groups))
        on_exit = lambda event: link.exited(event.describe())  # noqa: E731
        shell.adopt(ProcessHandle(GUARDIAN_NAME, g.pid, g.pidfd, None, _pipes(g.pipes), on_exit=on_exit,
                                  guarded=False))

    def adopt(self, name: str) -> int | None:
        """A boot Spawn for ``name``: its running process if it was handed over (then watched), else None."""
        return self._guarded(lambda: self._adopt_one(name))

    def _adopt_one(self, name: str) -> int | None:
        w = self._adopt.pop(name, None)
        if w is None:
            return None
        self._app.shell.adopt(ProcessHandle(w.name, w.pid, w.pidfd, None, _pipes(w.pipes)))
        self._adopted[name] = w.pid
        return w.pid

    def booted(self) -> None:
        """After the boot: adopted children are ready (boot waits for each), counters and histories put back."""
        self._guarded(self._booted)

    def _booted(self) -> None:
        h = self._handover
        if h is None:
            return
        if h.failed is None and os.environ.get(FAIL_VARIABLE) == "booted":
            raise RuntimeError(f"{FAIL_VARIABLE}=booted (test)")
        app = self._app
        for a in h.attached:  # in tree order: a parent before its children
            if a.kind == "task" and a.task is not None:
                app.workflows.tasks.adopt(a.spec, a.task)
            else:
                spec = child_spec_from_dict(a.spec, key="spec")
                app.apply(app.tree.attach(a.parent, spec, a.index))
                app.attached[spec.name] = (a.parent, a.spec)
        for name, version in h.versions.items():  # a rollout's version: its next start keeps it, as it runs now
            node = app.tree.find_quiet(name)
            if isinstance(node, Worker):
                node.spec = _versioned(node.spec, node.spec, version)
        while True:
            waiting = [n for n in app.tree.workers() if n.name in self._adopted and n.state is State.STARTING]
            if not waiting:
                break
            for node in waiting:
                app.feed(Ready(node.name, self._adopted[node.name]))
        restarts = {w.name: w.restarts for w in h.workers}
        for node in app.tree.workers():
            node.restarts = restarts.get(node.name, node.restarts)
        by_name = {s.name: s for s in h.supervisors}
        for sup in _supervisors(app.tree.root):
            if (s := by_name.get(sup.name)) is not None:
                sup.restarts, sup.history = s.restarts, s.history
        for d in h.down:  # as they were: stopped or failed, held (operator, parked) or not, their last exit
            node = app.tree.find_quiet(d.name)
            if node is not None and node.state in DOWN:
                node.held, node.state, node.restarts = d.held, State(d.state), d.restarts
                if isinstance(node, Worker):
                    node.last_exit, node.last_exit_at = d.last_exit, d.last_exit_at
                    node.backoff_attempt = d.backoff_attempt
                if d.restart_at is not None:  # its restart (decided and counted already) when it is due
                    app.loop.call_later(d.restart_at - time.monotonic(), lambda name=d.name: self._restart(name))
        for w in self._adopt.values():  # handed over but no longer in the tree (a config edited meanwhile)
            log.warning("upgrade: %s (pid %d) is not in the tree any more: stopping it", w.name, w.pid)
            with_handle = ProcessHandle(w.name, w.pid, w.pidfd, None, _pipes(w.pipes), on_exit=lambda _: None)
            app.shell.adopt(with_handle)
            app.shell.signal(w.pid, signal.SIGTERM)
        took = time.monotonic() - h.started_at
        self.last = {"generation": h.generation, "ok": h.failed is None, "error": h.failed,
                     "children": len(self._adopted), "took_ms": round(took * 1000, 1)}
        if h.failed is None:
            log.info("upgrade %d done: %d children adopted in %.1f ms", h.generation, len(self._adopted),
                     took * 1000)
        else:
            log.error("upgrade %d failed, the previous image took the tree back: %s", h.generation, h.failed)
        app.notifier.ready()
        self._handover, self._adopt = None, {}
        if self._path is not None:
            self._path.unlink(missing_ok=True)

    def _restart(self, name: str) -> None:
        """A restart the previous image had scheduled (backoff), now due: as its timer would have."""
        node = self._app.tree.find_quiet(name)
        if node is None or node.state not in DOWN or node.held or self._app.tree.shutting_down:
            return  # detached, started, stopped by the operator meanwhile, or going away
        self._app.apply(self._app.tree.request("start", name))

    def _guarded(self, step: Callable[[], T]) -> T:
        """An adoption step that raises makes this image fall back (once: a fallback that raises again exits)."""
        if self._handover is None or self._handover.failed is not None:
            return step()
        try:
            return step()
        except Exception as exc:  # any bug of the new image: the children must not die with it
            self._fall_back(f"the new image failed at adoption: {exc!r}")
            raise  # (not reached: execve)

    def _fall_back(self, why: str) -> None:
        assert self._handover is not None
        log.error("upgrade: %s; falling back", why)
        if self._app.control is not None:  # the new image got as far as run(): its sockets and stores are open
            self._end_zygote()
            self._close_parts()
        self._execute(failed=why, h=self._handover)

    def result(self, generation: int) -> dict[str, Any] | None:
        """The result of upgrade ``generation``, once known (None while it is still under way)."""
        if self.last is not None and self.last["generation"] >= generation:
            return self.last
        return None


def _pipes(raw: tuple[tuple[int, str], ...]) -> list[OutputPipe]:
    return [OutputPipe(fd, stream) for fd, stream in raw]


def _versioned(base: WorkerSpec, running: WorkerSpec, version: dict[str, Any] | None = None) -> WorkerSpec:
    """``base`` at the version (agent class, env) that ``running`` has, or that ``version`` says."""
    if version is None:
        return replace(base, agent=running.agent, env=running.env)
    return replace(base, agent=version["agent"], env=tuple((str(k), str(v)) for k, v in version["env"]))


def _walk(root: Supervisor) -> list[tuple[Supervisor | None, int, Supervisor | Worker]]:
    """Every node in tree order (a parent before its children): (its parent, its index there, the node)."""
    out: list[tuple[Supervisor | None, int, Supervisor | Worker]] = []

    def visit(parent: Supervisor | None, index: int, node: Supervisor | Worker) -> None:
        out.append((parent, index, node))
        if isinstance(node, Supervisor):
            for i, child in enumerate(node.children):
                visit(node, i, child)

    visit(None, 0, root)
    return out


def _supervisors(root: Supervisor | Worker) -> list[Supervisor]:
    out: list[Supervisor] = []
    todo: list[Supervisor | Worker] = [root]
    while todo:
        node = todo.pop()
        if isinstance(node, Supervisor):
            out.append(node)
            todo.extend(node.children)
    return out
