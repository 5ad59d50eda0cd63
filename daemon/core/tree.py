"""The supervision core: OTP's supervisor rules as a pure state machine over plain data.

No processes, sockets or clocks here: the shell feeds events, the core returns actions.

    events ──> handle() ──> worker/supervisor nodes ──> inbox items ──> plan steps ──> actions
                                   ^                                        │
                                   └────────── completion (settle) ─────────┘

Each supervisor works through its ``plan`` one step at a time (start this child, stop that one,
wait, finish) and blocks on the step's completion, the way an OTP supervisor blocks in
terminate_child/start_child. Whatever arrives while it is busy (a crash, an operator request, a
backoff timer) waits in its ``inbox`` and is decided when the plan is done; a crash report whose
child has been restarted since is stale and dropped, as OTP drops EXITs from old pids.

Rules (DESIGN 4):
  * restart types: permanent always, transient after an abnormal exit, temporary never;
  * strategies: one_for_one restarts the child, one_for_all all running siblings, rest_for_one the
    child and the running ones after it; others stop in reverse order, then start in order;
  * intensity: every restart is recorded; more than ``intensity`` within ``period`` seconds and the
    supervisor stops its children in reverse order and fails, a crash in its parent; the root's
    failure halts the daemon non-zero;
  * a child that fails to start while its supervisor first starts fails that supervisor (escalated,
    no tight loop); failing to start during a restart counts as one more crash.
"""

from __future__ import annotations

import random
import signal
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from daemon.core import backoff, events, intensity
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
from daemon.core.spec import BRUTAL_KILL, INFINITY, ChildSpec, RestartType, Strategy, SupervisorSpec, WorkerSpec
from daemon.core.states import ALIVE, ALLOWED, DOWN, IllegalTransition, State
from ipc.errors import ErrorCode, FoundationError

ROOT = "root"
EVENTS_KEPT = 10_000  # undrained core events kept; the oldest go first


def should_restart(restart: RestartType, normal_exit: bool) -> bool:
    """OTP's do_restart/3 decision table."""
    match restart, normal_exit:
        case RestartType.PERMANENT, _:
            return True
        case RestartType.TRANSIENT, normal:
            return not normal
        case _:
            return False


# ---- nodes ----


@dataclass(eq=False)
class Node:
    parent: Supervisor | None
    state: State = State.STOPPED
    restarts: int = 0
    held: bool = False  # stopped by the operator: strategies leave it down until started again
    # Attached by an operator and not yet started once: a failed first start removes it (OTP's start_child)
    # instead of counting as a crash; ``rejected`` then says why.
    attach_pending: bool = False
    rejected: str | None = None
    ephemeral: bool = False  # a dynamic child removed when it ends for good (OTP's simple_one_for_one children)
    failure: str | None = None  # (supervisors) why it failed, for the halting line
    incarnation: int = 0
    backoff_timer: int | None = None

    @property
    def name(self) -> str:
        raise NotImplementedError

    def transition(self, new: State) -> None:
        if new not in ALLOWED[self.state]:
            raise IllegalTransition(f"{self.name}: {self.state} -> {new}")
        self.state = new


@dataclass(eq=False)
class Worker(Node):
    spec: WorkerSpec = field(default_factory=lambda: WorkerSpec(name="?"))
    pid: int | None = None
    started_at: float | None = None
    kill_timer: int | None = None
    ready_timer: int | None = None
    # The timed phase in progress (starting: ready_timer, stopping: kill_timer): when it began and when its timer
    # acts. EXTEND_TIMEOUT_USEC moves ``deadline`` later (``extended``); the timer, when it fires early, re-arms.
    phase_began: float | None = None
    deadline: float | None = None
    extended: bool = False
    backoff_attempt: int = 0
    last_exit: str | None = None
    last_exit_at: float | None = None  # when (the core's clock)
    # ``status``'s entry, kept with what it was made of (see _describe_worker): rebuilt only when that changes
    described: tuple[tuple[Any, ...], dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(eq=False)
class Supervisor(Node):
    spec: SupervisorSpec = field(default_factory=lambda: SupervisorSpec(name="?"))
    children: list[Worker | Supervisor] = field(default_factory=list)
    history: tuple[float, ...] = ()
    plan: deque[Step] = field(default_factory=deque)
    inbox: deque[Item] = field(default_factory=deque)
    waiting: Node | None = None
    wait_kind: str = ""  # "start" | "stop" | "sleep"
    sleep_timer: int | None = None

    @property
    def name(self) -> str:
        return self.spec.name


AnyNode = Worker | Supervisor

# ---- plan steps and inbox items ----


@dataclass(frozen=True)
class StartStep:
    node: AnyNode


@dataclass(frozen=True)
class StopStep:
    node: AnyNode


@dataclass(frozen=True)
class SleepStep:
    delay: float


@dataclass(frozen=True)
class RemoveStep:
    node: AnyNode


@dataclass(frozen=True)
class FinishStart:
    pass


@dataclass(frozen=True)
class FinishStop:
    failed: bool


Step = StartStep | StopStep | SleepStep | RemoveStep | FinishStart | FinishStop


@dataclass(frozen=True)
class ExitItem:
    node: AnyNode
    incarnation: int
    normal: bool


@dataclass(frozen=True)
class RequestItem:
    verb: str  # start | stop | restart | detach
    node: AnyNode


@dataclass(frozen=True)
class BackoffDone:
    node: AnyNode
    incarnation: int


Item = ExitItem | RequestItem | BackoffDone


# ---- the tree ----


class SupervisionTree:
    """Owns every node; the only way in is ``boot``, ``handle`` and the request methods."""

    def __init__(
        self, root: SupervisorSpec, clock: Callable[[], float], rng: random.Random | None = None
    ) -> None:
        self._clock = clock
        self._rng = rng or random.Random()
        self._out: list[Action] = []
        self._runq: deque[Supervisor] = deque()
        self._timers: dict[int, Callable[[], None]] = {}
        self._next_token = 0
        self._index: dict[str, AnyNode] = {}
        self._events: deque[events.CoreEvent] = deque(maxlen=EVENTS_KEPT)
        self.events_dropped = 0
        built = self._build(root, None)
        assert isinstance(built, Supervisor)
        self.root: Supervisor = built
        self.halted: Halt | None = None
        self.shutting_down = False

    # ---- public surface ----

    def boot(self) -> list[Action]:
        """Start the whole tree, children in order."""
        self._begin_start(self.root)
        return self._drain()

    def handle(self, event: Event) -> list[Action]:
        match event:
            case Spawned(name, pid, ready):
                self._on_spawned(name, pid, ready)
            case Ready(name, pid):
                self._on_ready(name, pid)
            case ExtendTimeout(name, pid, seconds):
                self._on_extend_timeout(name, pid, seconds)
            case SpawnFailed(name, reason):
                self._on_spawn_failed(name, reason)
            case Exited():
                self._on_exited(event)
            case TimerFired(token):
                callback = self._timers.pop(token, None)
                if callback is not None:
                    callback()
        return self._drain()

    def find(self, name: str) -> AnyNode:
        node = self._index.get(name)
        if node is None:
            raise FoundationError(ErrorCode.NO_SUCH_CHILD, f"no child named {name!r}")
        return node

    def find_quiet(self, name: str) -> AnyNode | None:
        return self._index.get(name)

    def request(self, verb: str, name: str) -> list[Action]:
        """Operator verbs start/stop/restart/detach; validated now, carried out in order."""
        if verb not in ("start", "stop", "restart", "detach"):
            raise FoundationError(ErrorCode.UNKNOWN_VERB, f"the tree knows no verb {verb!r}")
        self._refuse_while_shutting_down()
        node = self.find(name)
        if node.parent is None:
            raise FoundationError(ErrorCode.BAD_REQUEST, f"cannot {verb} the root supervisor; use shutdown")
        self._post(node.parent, RequestItem(verb, node))
        return self._drain()

    def attach(self, parent: str, spec: ChildSpec, index: int | None = None, *, synchronous: bool = False,
               ephemeral: bool = False) -> list[Action]:
        """Add a dynamic child to ``parent`` (at the end, or before its ``index``-th child) and start it.

        ``synchronous`` (an operator's attach): if that first start fails, the child is removed again and its
        node's ``rejected`` says why, instead of the failure counting as a crash in ``parent``. ``ephemeral``: once
        it ends and its restart type says it is not restarted (temporary; transient after a normal exit), it is
        removed from the tree, as the children of OTP's simple_one_for_one are."""
        self._refuse_while_shutting_down()
        sup = self.find(parent)
        if not isinstance(sup, Supervisor):
            raise FoundationError(ErrorCode.NOT_A_SUPERVISOR, f"{parent!r} is a worker, not a supervisor")
        clash = [n for n in spec_names(spec) if n in self._index or n == ROOT]
        if clash:
            raise FoundationError(ErrorCode.ALREADY_EXISTS, f"a child named {clash[0]!r} already exists")
        node = self._build(spec, sup)
        node.attach_pending = synchronous
        node.ephemeral = ephemeral
        sup.children.insert(len(sup.children) if index is None else index, node)
        self._post(sup, RequestItem("start", node))
        return self._drain()

    def update_settings(self, spec: SupervisorSpec) -> None:
        """A reload changed a supervisor's own settings (strategy, intensity, period, restart): take them now."""
        node = self.find(spec.name)
        if not isinstance(node, Supervisor):
            raise FoundationError(ErrorCode.NOT_A_SUPERVISOR, f"{spec.name!r} is not a supervisor")
        node.spec = spec

    def reorder(self, name: str, order: tuple[str, ...]) -> None:
        """A reload changed the order of a supervisor's children: later starts, stops and rest_for_one follow it
        (nothing restarts). Children the config does not name (attached at run time) keep their order, after."""
        node = self.find(name)
        if not isinstance(node, Supervisor):
            raise FoundationError(ErrorCode.NOT_A_SUPERVISOR, f"{name!r} is not a supervisor")
        rank = {child: i for i, child in enumerate(order)}
        node.children.sort(key=lambda c: rank.get(c.name, len(rank)))

    def replace(self, spec: WorkerSpec) -> list[Action]:
        """A reload changed a worker's spec: a running one restarts with it, a stopped one keeps it for later."""
        self._refuse_while_shutting_down()
        node = self.find(spec.name)
        if not isinstance(node, Worker):
            raise FoundationError(ErrorCode.INVALID_SPEC, f"{spec.name!r} is not a worker")
        node.spec = spec
        if node.state in ALIVE and node.parent is not None:
            self._post(node.parent, RequestItem("restart", node))
        return self._drain()

    def shutdown(self) -> list[Action]:
        """Orderly stop of the whole tree, children in reverse order; ends with Halt(0)."""
        if not self.shutting_down and self.halted is None:
            self.shutting_down = True
            self._emit_log("notice", "shutting down the tree")
            if self.root.state is not State.STOPPING:  # a failing root keeps its failure
                self._begin_stop(self.root, failed=False)
        return self._drain()

    def snapshot(self) -> dict[str, Any]:
        """The whole tree as plain data, for ``status``: built on every request, so one clock read for all."""
        return _describe_supervisor(self.root, self._clock())

    def workers(self) -> list[Worker]:
        return [n for n in self._index.values() if isinstance(n, Worker)]

    # ---- events ----

    def _on_spawned(self, name: str, pid: int, ready: bool) -> None:
        node = self._index.get(name)
        if not isinstance(node, Worker) or node.state is not State.STARTING:
            return
        node.pid = pid
        node.started_at = self._clock()
        if ready:
            self._on_ready(name, pid)
            return
        # Synchronous start (OTP's init_ack): siblings wait until this one is ready, or its time runs out.
        timeout = node.spec.start_timeout
        self._begin_phase(node, timeout)
        node.ready_timer = self._start_timer(timeout, lambda: self._not_ready(node, pid, timeout))

    def _on_ready(self, name: str, pid: int) -> None:
        node = self._index.get(name)
        if not isinstance(node, Worker) or node.state is not State.STARTING or node.pid != pid:
            return
        self._cancel(node.ready_timer)
        node.ready_timer = None
        self._end_phase(node)
        node.started_at = self._clock()
        self._transition(node, State.RUNNING)
        self._record(events.ChildStarted(self._clock(), name, pid))
        self._emit_log("info", f"started {name} (pid {pid})")
        self._settle(node, started=True)

    def _not_ready(self, node: Worker, pid: int, timeout: float) -> None:
        node.ready_timer = None
        if node.state is not State.STARTING or node.pid != pid:
            return
        late = self._phase_extension(node)
        if late is not None:
            node.ready_timer = self._start_timer(late, lambda: self._not_ready(node, pid, timeout))
            return
        if node.extended:
            self._emit_log("error", f"{node.name} was not ready within {self._phase_elapsed(node)}s (start_timeout "
                           f"{timeout}s, extended by the child); killing it")
        else:
            self._emit_log("error", f"{node.name} was not ready within {timeout}s; killing it")
        self._end_phase(node)
        self._out.append(Signal(node.name, pid, signal.SIGKILL))

    def _on_extend_timeout(self, name: str, pid: int, seconds: float) -> None:
        """EXTEND_TIMEOUT_USEC, as systemd reads it: the deadline of the phase the child is in (start, or stop after
        SIGTERM) becomes at least ``seconds`` from now; it never moves earlier, and may pass start_timeout/shutdown.
        A running child, or a stop without a SIGKILL deadline (brutal_kill, infinity, SIGKILL sent), has none."""
        node = self._find_worker_by_pid(name, pid)
        if node is None or not 0 <= seconds < float("inf") or node.deadline is None:
            return
        if node.state is State.STARTING and node.ready_timer is not None:
            phase = "start"
        elif node.state is State.STOPPING and node.kill_timer is not None:
            phase = "stop"
        else:
            return
        new = self._clock() + seconds
        if new <= node.deadline:
            return
        # The timer stays as it is: when it fires before the new deadline it re-arms for the rest (one live timer
        # per child however often the child asks, and nothing to cancel).
        node.deadline = new
        node.extended = True
        self._emit_log("debug", f"{name} extended its {phase} timeout to {seconds:g}s from now")

    def _begin_phase(self, node: Worker, timeout: float) -> None:
        now = self._clock()
        node.phase_began, node.deadline, node.extended = now, now + timeout, False

    def _end_phase(self, node: Worker) -> None:
        node.phase_began = node.deadline = None
        node.extended = False

    def _phase_extension(self, node: Worker) -> float | None:
        """Seconds still left when the phase's timer fires before a deadline the child extended; else None."""
        if not node.extended or node.deadline is None:
            return None
        left = node.deadline - self._clock()
        return left if left > 0 else None

    def _phase_elapsed(self, node: Worker) -> float:
        return round(self._clock() - (node.phase_began or 0.0), 3)

    def _on_spawn_failed(self, name: str, reason: str) -> None:
        node = self._index.get(name)
        if not isinstance(node, Worker) or node.state is not State.STARTING:
            return
        self._transition(node, State.FAILED)
        self._record(events.StartFailed(self._clock(), name, reason))
        node.last_exit, node.last_exit_at = f"failed to start: {reason}", self._clock()
        self._emit_log("error", f"{name} failed to start: {reason}")
        self._settle(node, started=False)

    def _on_exited(self, ev: Exited) -> None:
        node = self._find_worker_by_pid(ev.name, ev.pid)
        if node is None:
            return
        self._cancel(node.kill_timer)
        self._cancel(node.ready_timer)
        node.kill_timer = node.ready_timer = None
        self._end_phase(node)
        node.pid = None
        node.last_exit, node.last_exit_at = ev.describe(), self._clock()
        expected = node.state is State.STOPPING
        self._record(events.ChildExited(self._clock(), node.name, ev.pid, node.last_exit, expected, ev.status,
                                         ev.signal))
        if node.state is State.STARTING:
            self._record(events.StartFailed(self._clock(), node.name, f"{node.last_exit} before it was ready"))
        if expected:
            self._transition(node, State.STOPPED)
            self._emit_log("info", f"stopped {node.name} ({node.last_exit})")
            self._settle(node, started=False)
        elif node.state is State.STARTING:
            self._transition(node, State.FAILED)
            self._emit_log("error", f"{node.name} {node.last_exit} before it was ready")
            self._settle(node, started=False)
        else:
            normal = ev.status == 0
            self._transition(node, State.STOPPED if normal else State.FAILED)
            self._emit_log("info" if normal else "warning", f"{node.name} {node.last_exit}")
            self._settle(node, started=False, normal=normal)

    def _find_worker_by_pid(self, name: str, pid: int) -> Worker | None:
        node = self._index.get(name)
        return node if isinstance(node, Worker) and node.pid == pid else None

    # ---- completion ----

    def _settle(self, node: AnyNode, *, started: bool, normal: bool = False) -> None:
        """A node finished starting, finished stopping, or went down by itself: tell its parent."""
        parent = node.parent
        if parent is None:
            return
        if parent.waiting is node:
            kind = parent.wait_kind
            parent.waiting = None
            self._runq.append(parent)
            if kind == "start" and started:
                node.attach_pending = False
            elif kind == "start":
                self._on_start_failure(parent, node)
            return
        if not started and node.state in DOWN:
            self._post(parent, ExitItem(node, node.incarnation, normal))

    def _on_start_failure(self, sup: Supervisor, child: AnyNode) -> None:
        why = _start_failure(child)
        if child.attach_pending:  # OTP's start_child: the error goes to the caller, the child is not added
            child.attach_pending = False
            child.rejected = why
            self._emit_log("error", f"{why}; not attached")
            sup.plan.appendleft(RemoveStep(child))
            return
        if sup.state is State.STARTING:
            self._fail(sup, why)
        else:
            sup.inbox.appendleft(ExitItem(child, child.incarnation, normal=False))

    # ---- the scheduler ----

    def _post(self, sup: Supervisor, item: Item) -> None:
        sup.inbox.append(item)
        self._runq.append(sup)

    def _drain(self) -> list[Action]:
        while self._runq:
            self._pump(self._runq.popleft())
        out, self._out = self._out, []
        return out

    def _pump(self, sup: Supervisor) -> None:
        while sup.waiting is None and sup.sleep_timer is None:
            if sup.plan:
                self._run_step(sup, sup.plan.popleft())
            elif sup.inbox:
                self._run_item(sup, sup.inbox.popleft())
            else:
                return

    def _run_step(self, sup: Supervisor, step: Step) -> None:
        match step:
            case StartStep(node):
                self._step_start(sup, node)
            case StopStep(node):
                self._step_stop(sup, node)
            case SleepStep(delay):
                sup.sleep_timer = self._start_timer(delay, lambda: self._wake(sup))
            case RemoveStep(node):
                if node in sup.children:
                    sup.children.remove(node)
                names = tuple(node_names(node))
                for name in names:
                    self._index.pop(name, None)
                self._emit_log("notice", f"detached {node.name}")
                self._out.append(Removed(names))
            case FinishStart():
                self._transition(sup, State.RUNNING)
                self._settle(sup, started=True)
            case FinishStop(failed):
                self._finish_stop(sup, failed)

    def _wake(self, sup: Supervisor) -> None:
        sup.sleep_timer = None
        self._runq.append(sup)

    def _step_start(self, sup: Supervisor, node: AnyNode) -> None:
        if node.state in ALIVE or node.held or node not in sup.children:
            return
        if sup.state not in (State.STARTING, State.RUNNING):
            return  # a stopped or failed supervisor starts nothing; its next start brings the child up
        self._cancel(node.backoff_timer)
        node.backoff_timer = None
        node.incarnation += 1
        if isinstance(node, Worker):
            self._transition(node, State.STARTING)
            self._out.append(Spawn(node.name, node.spec))
        else:
            self._begin_start(node)
        sup.waiting, sup.wait_kind = node, "start"

    def _step_stop(self, sup: Supervisor, node: AnyNode) -> None:
        self._cancel(node.backoff_timer)
        node.backoff_timer = None
        if node.state in DOWN:
            return
        sup.waiting, sup.wait_kind = node, "stop"
        if isinstance(node, Supervisor):
            if node.state is not State.STOPPING:
                self._begin_stop(node, failed=False)
            return
        if node.state is State.STOPPING:
            return
        self._transition(node, State.STOPPING)
        assert node.pid is not None
        shutdown = node.spec.shutdown
        sig = signal.SIGKILL if shutdown == BRUTAL_KILL else signal.SIGTERM
        self._out.append(Signal(node.name, node.pid, sig))
        self._end_phase(node)  # a start cut short by this stop: its deadline no longer applies
        if shutdown not in (BRUTAL_KILL, INFINITY):
            self._begin_phase(node, float(shutdown))
            node.kill_timer = self._start_timer(float(shutdown), lambda: self._kill_overdue(node))

    def _kill_overdue(self, node: Worker) -> None:
        node.kill_timer = None
        if node.state is not State.STOPPING or node.pid is None:
            return
        late = self._phase_extension(node)
        if late is not None:
            node.kill_timer = self._start_timer(late, lambda: self._kill_overdue(node))
            return
        if node.extended:
            self._emit_log("warning", f"{node.name} did not stop within {self._phase_elapsed(node)}s (shutdown "
                           f"{node.spec.shutdown}s, extended by the child); sending SIGKILL")
        else:
            self._emit_log("warning", f"{node.name} did not stop within {node.spec.shutdown}s; sending SIGKILL")
        self._end_phase(node)
        self._out.append(Signal(node.name, node.pid, signal.SIGKILL))

    def _begin_start(self, sup: Supervisor) -> None:
        self._transition(sup, State.STARTING)
        sup.history = ()
        sup.plan = deque([*(StartStep(c) for c in sup.children), FinishStart()])
        self._runq.append(sup)

    def _begin_stop(self, sup: Supervisor, *, failed: bool) -> None:
        """Replace whatever the supervisor planned with: stop all children in reverse order, then finish."""
        if sup.state is not State.STOPPING:
            self._transition(sup, State.STOPPING)
        sup.inbox.clear()
        self._cancel(sup.sleep_timer)
        sup.sleep_timer = None
        waiting = sup.waiting
        starting = isinstance(waiting, Supervisor) or (isinstance(waiting, Worker) and waiting.pid)
        if sup.wait_kind == "start" and starting:
            # A child still starting (waiting for READY=1, or an agent's hello) is stopped now, with the others,
            # rather than after it is ready or its start_timeout has run out.
            sup.waiting = None
        sup.plan = deque([*(StopStep(c) for c in reversed(sup.children)), FinishStop(failed)])
        self._runq.append(sup)

    def _fail(self, sup: Supervisor, reason: str) -> None:
        sup.failure = reason
        self._record(events.SupervisorFailed(self._clock(), sup.name, reason))
        self._emit_log("error", f"supervisor {sup.name} failed: {reason}; stopping its children")
        self._begin_stop(sup, failed=True)

    def _finish_stop(self, sup: Supervisor, failed: bool) -> None:
        self._transition(sup, State.FAILED if failed else State.STOPPED)
        if sup.parent is None:
            if failed:
                self.halted = Halt(1, f"root supervisor failed: {sup.failure or 'restart intensity exceeded'}")
            else:
                self.halted = Halt(0, "orderly shutdown")
            self._out.append(self.halted)
            self._record(events.Halted(self._clock(), self.halted.code, self.halted.reason))
            return
        self._settle(sup, started=False, normal=not failed)

    # ---- deciding ----

    def _run_item(self, sup: Supervisor, item: Item) -> None:
        match item:
            case ExitItem(node, incarnation, normal):
                self._decide_restart(sup, node, incarnation, normal)
            case RequestItem(verb, node):
                self._operator(sup, verb, node)
            case BackoffDone(node, incarnation):
                node.backoff_timer = None
                if node.incarnation == incarnation and node.state in DOWN:
                    sup.plan.append(StartStep(node))

    def _operator(self, sup: Supervisor, verb: str, node: AnyNode) -> None:
        if verb in ("start", "restart"):
            node.held = False
        if verb in ("stop", "detach"):
            node.held = True
        if verb in ("stop", "restart", "detach"):
            sup.plan.append(StopStep(node))
        if verb in ("start", "restart"):
            sup.plan.append(StartStep(node))
        if verb == "detach":
            sup.plan.append(RemoveStep(node))

    def _decide_restart(self, sup: Supervisor, node: AnyNode, incarnation: int, normal: bool) -> None:
        stale = node.incarnation != incarnation or node.state in ALIVE or node not in sup.children
        if stale or sup.state is not State.RUNNING or node.held:
            return
        if not should_restart(node.spec.restart, normal):
            if node.ephemeral:
                sup.plan.append(RemoveStep(node))
            else:
                self._emit_log("info", f"{node.name} is {node.spec.restart}: not restarted")
            return
        now = self._clock()
        sup.history = intensity.add_restart(sup.history, now, sup.spec.period)
        if intensity.exceeded(sup.history, sup.spec.intensity) and isinstance(node, Worker) and _parks(node):
            self._park(sup, node)
            return
        if intensity.exceeded(sup.history, sup.spec.intensity):
            self._record(events.IntensityExceeded(now, sup.name, sup.spec.intensity, sup.spec.period, node.name))
            self._fail(
                sup,
                f"more than {sup.spec.intensity} restarts in {sup.spec.period}s (last: {node.name})",
            )
            return
        sup.restarts += 1
        wait = self._backoff_delay(node, now)
        if sup.spec.strategy is Strategy.ONE_FOR_ONE:
            self._restart_one(sup, node, wait)
        else:
            self._restart_group(sup, node, wait)

    def _park(self, sup: Supervisor, node: Worker) -> None:
        """``on_intensity = "park"``: this restart is not taken (nor counted); the child stays down, held, with its
        reason, and the supervisor runs on. ``start`` releases it."""
        sup.history = sup.history[:-1]
        node.held = True
        reason = f"more than {sup.spec.intensity} restarts in {sup.spec.period:g}s"
        node.last_exit = f"{node.last_exit}; parked: {reason}"
        self._record(events.ChildParked(self._clock(), node.name, sup.name, reason))
        self._emit_log("warning", f"parking {node.name} ({reason}); 'foundationctl start {node.name}' when fixed")

    def _restart_one(self, sup: Supervisor, node: AnyNode, wait: float) -> None:
        node.restarts += 1
        self._record(events.ChildRestarted(self._clock(), node.name, sup.name, node.restarts, wait))
        if wait > 0:
            self._emit_log("notice", f"restarting {node.name} in {wait:.3f}s (backoff)")
            token = node.incarnation
            node.backoff_timer = self._start_timer(wait, lambda: self._post(sup, BackoffDone(node, token)))
        else:
            self._emit_log("notice", f"restarting {node.name}")
            sup.plan.append(StartStep(node))

    def _restart_group(self, sup: Supervisor, node: AnyNode, wait: float) -> None:
        first = 0 if sup.spec.strategy is Strategy.ONE_FOR_ALL else sup.children.index(node)
        group = [
            c
            for c in sup.children[first:]
            if c is node or (not c.held and (c.state in ALIVE or c.backoff_timer is not None))
        ]
        self._emit_log("notice", f"{sup.spec.strategy}: restarting {', '.join(c.name for c in group)}")
        for child in reversed(group):
            if child is not node:
                sup.plan.append(StopStep(child))
        if wait > 0:
            sup.plan.append(SleepStep(wait))
        for child in group:
            if child is not node and child.spec.restart is RestartType.TEMPORARY:
                continue  # OTP: a temporary sibling is stopped with the group, never started again
            child.restarts += 1
            self._record(events.ChildRestarted(self._clock(), child.name, sup.name, child.restarts, wait))
            sup.plan.append(StartStep(child))

    def _backoff_delay(self, node: AnyNode, now: float) -> float:
        if not isinstance(node, Worker) or node.spec.backoff is None:
            return 0.0
        policy = node.spec.backoff
        if node.started_at is not None and now - node.started_at >= policy.reset_after:
            node.backoff_attempt = 0
        wait = backoff.delay(policy, node.backoff_attempt, self._rng)
        node.backoff_attempt += 1
        return wait

    # ---- helpers ----

    def _build(self, spec: ChildSpec, parent: Supervisor | None) -> AnyNode:
        node: AnyNode
        if isinstance(spec, SupervisorSpec):
            node = Supervisor(parent=parent, spec=spec)
            node.children = [self._build(c, node) for c in spec.children]
        else:
            node = Worker(parent=parent, spec=spec)
        self._index[spec.name] = node
        return node

    def _refuse_while_shutting_down(self) -> None:
        failing = self.root.state is State.STOPPING  # the root is stopping its children to halt(1)
        if self.shutting_down or self.halted is not None or failing:
            raise FoundationError(ErrorCode.SHUTTING_DOWN, "the daemon is shutting down")

    def _start_timer(self, delay: float, callback: Callable[[], None]) -> int:
        self._next_token += 1
        self._timers[self._next_token] = callback
        self._out.append(StartTimer(self._next_token, delay))
        return self._next_token

    def _cancel(self, token: int | None) -> None:
        if token is not None and self._timers.pop(token, None) is not None:
            self._out.append(CancelTimer(token))

    def _emit_log(self, level: str, message: str) -> None:
        self._out.append(Log(level, message))

    def _transition(self, node: AnyNode, new: State) -> None:
        """Every state change of every node passes here (supervisord's change_state): checked, then recorded."""
        old = node.state
        node.transition(new)
        self._record(events.Transition(self._clock(), node.name, str(old), str(new)))

    def _record(self, event: events.CoreEvent) -> None:
        if len(self._events) == self._events.maxlen:
            self.events_dropped += 1  # nobody drains: the oldest go, counted
        self._events.append(event)

    def take_events(self) -> list[events.CoreEvent]:
        """What the core decided since the last call, oldest first (bounded: see ``events_dropped``)."""
        taken = list(self._events)
        self._events.clear()
        return taken

# ---- descriptions (status) ----
#
# A status request describes every node, 1,000 entries at 1,000 children, so these are lean: enums go out as they
# are (a StrEnum is a str, and orjson encodes it), the command as its tuple (a JSON array all the same), and the
# fields are read once each; ~0.5 us a worker where str(), list(), properties and a clock read per worker took ~1.


def _describe_supervisor(node: Supervisor, now: float) -> dict[str, Any]:
    spec = node.spec
    return {
        "name": spec.name,
        "type": "supervisor",
        "strategy": spec.strategy,
        "intensity": spec.intensity,
        "period": spec.period,
        "state": node.state,
        "restarts": node.restarts,
        "restart": spec.restart,
        "children": [
            _describe_worker(c, now) if isinstance(c, Worker) else _describe_supervisor(c, now) for c in node.children
        ],
    }


def _describe_worker(node: Worker, now: float) -> dict[str, Any]:
    """A worker's ``status`` entry. What does not move with the clock is kept on the node with the fields it was made
    of, and rebuilt only when one of them changed: most workers of a large tree are as they were at the last
    ``status`` (a copy and one or two clock fields is ~3x cheaper than a new entry; 10,000 children)."""
    spec = node.spec
    state = node.state
    started_at = node.started_at
    key = (state, node.pid, node.restarts, started_at, node.last_exit, node.last_exit_at, node.held, spec)
    kept = node.described
    if kept is None or kept[0] != key:
        entry: dict[str, Any] = {
            "name": spec.name,
            "type": "worker",
            "pid": node.pid,
            "state": state,
            "restart": spec.restart,
            "restarts": node.restarts,
            "uptime_s": None,
            "last_exit": node.last_exit,
        }
        if node.last_exit_at is not None:
            entry["last_exit_ago_s"] = None
        if node.held and state is not State.RUNNING and spec.on_intensity == "park" and "parked:" in (
                node.last_exit or ""):
            entry["parked"] = True
        if spec.agent:
            entry["agent"] = spec.agent
        else:
            entry["command"] = spec.command
        kept = node.described = (key, entry)
    out = kept[1].copy()  # the caller may add to it (what notify children reported)
    if state is State.RUNNING and started_at is not None:
        out["uptime_s"] = round(now - started_at, 3)
    if node.last_exit_at is not None:
        out["last_exit_ago_s"] = round(now - node.last_exit_at, 1)
    return out


def _parks(node: Worker) -> bool:
    return node.spec.on_intensity == "park"


def _start_failure(node: AnyNode) -> str:
    """``ghost failed to start: /no/such/program: not an executable file``; the failing child of a supervisor."""
    if isinstance(node, Supervisor):
        return f"{node.name} failed to start: {node.failure}" if node.failure else f"{node.name} failed to start"
    exit_ = node.last_exit or "failed to start"
    if exit_.startswith("failed to start"):
        return f"{node.name} {exit_}"
    return f"{node.name} failed to start: {exit_} before it was ready"


def workers_of(node: AnyNode) -> list[Worker]:
    """The workers of ``node``'s subtree (``node`` itself if it is one), in start order."""
    if isinstance(node, Worker):
        return [node]
    return [w for child in node.children for w in workers_of(child)]


def node_names(node: AnyNode) -> list[str]:
    if isinstance(node, Supervisor):
        return [node.name, *(n for c in node.children for n in node_names(c))]
    return [node.name]


def spec_names(spec: ChildSpec) -> list[str]:
    if isinstance(spec, SupervisorSpec):
        return [spec.name, *(n for c in spec.children for n in spec_names(c))]
    return [spec.name]
