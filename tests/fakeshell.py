"""A small fake shell for the pure supervision core: fake pids, a fake clock, a fake timer list.

It executes the core's actions the way ``daemon.main.Daemon._apply`` does (a Spawn is answered at once
with ``Spawned`` and the resulting actions join the queue), records every action in order, and never
lets a process end by itself: a Signal is only recorded, and the test decides when a process exits.
A ``ready = "notify"`` worker (or an agent) is spawned still starting, as the daemon does; the test
says when it is ready (``ready``) or asks for more time for it (``extend``).

    test ── crash / exit / exit_after_signal / advance / request / attach / shutdown ──> FakeShell
    FakeShell ── events ──> SupervisionTree ── actions ──> FakeShell (spawn, record, timers)
"""

from __future__ import annotations

import random
import signal
from collections import deque
from collections.abc import Callable

from daemon.core.protocol import (
    Action,
    CancelTimer,
    Event,
    Exited,
    ExtendTimeout,
    Halt,
    Log,
    Ready,
    Signal,
    Spawn,
    Spawned,
    SpawnFailed,
    StartTimer,
    TimerFired,
)
from daemon.core.spec import ChildSpec, SupervisorSpec, WorkerSpec
from daemon.core.tree import SupervisionTree

SIGTERM = int(signal.SIGTERM)
SIGKILL = int(signal.SIGKILL)


class FakeShell:
    """Drives a SupervisionTree with fake processes; every public method returns the actions it caused."""

    def __init__(self, root: SupervisorSpec, *, seed: int = 0, start: float = 1000.0) -> None:
        self.now = start
        self.tree = SupervisionTree(root, clock=lambda: self.now, rng=random.Random(seed))
        self.log: list[Action] = []  # every action, in the order the shell carried it out
        self.timers: dict[int, float] = {}  # token -> due time
        self.live: dict[str, int] = {}  # name -> pid of the live fake process
        self.signalled: dict[str, list[int]] = {}  # name -> signals its live process received
        self.spawn_count: dict[str, int] = {}
        self.fail_next_spawns: dict[str, int] = {}  # name -> how many of its next spawns fail
        self.halt: Halt | None = None
        self.on_action: Callable[[Action], None] | None = None  # an observer hook for invariant checks
        self._next_pid = 100

    # ---- driving ----

    def boot(self) -> list[Action]:
        return self._run(self.tree.boot())

    def send(self, event: Event) -> list[Action]:
        return self._run(self.tree.handle(event))

    def crash(self, name: str, status: int = 1) -> list[Action]:
        """The live process of ``name`` exits by itself with ``status``."""
        return self.send(Exited(name, self._pop_live(name), status=status))

    def ready(self, name: str) -> list[Action]:
        """A two-step child (``ready = "notify"``, an agent) says it is ready: READY=1, or an agent's hello."""
        return self.send(Ready(name, self.live[name]))

    def extend(self, name: str, seconds: float) -> list[Action]:
        """The live process of ``name`` sends EXTEND_TIMEOUT_USEC for ``seconds``."""
        return self.send(ExtendTimeout(name, self.live[name], seconds))

    def exit(self, name: str) -> list[Action]:
        return self.crash(name, status=0)

    def kill(self, name: str, sig: int = SIGKILL) -> list[Action]:
        """The live process of ``name`` is killed by ``sig`` that the core did not send."""
        return self.send(Exited(name, self._pop_live(name), signal=sig))

    def exit_after_signal(self, name: str) -> list[Action]:
        """The process of ``name`` dies of the last signal the core sent it."""
        sigs = self.signalled.get(name)
        assert sigs, f"{name} was never signalled"
        return self.send(Exited(name, self._pop_live(name), signal=sigs[-1]))

    def stop_signalled(self) -> list[Action]:
        """Let every signalled process die, one at a time, until none is left; the actions caused."""
        out: list[Action] = []
        while True:
            pending = [n for n in self.live if self.signalled.get(n)]
            if not pending:
                return out
            out += self.exit_after_signal(pending[0])

    def advance(self, dt: float) -> list[Action]:
        """Move the clock forward by ``dt``, firing due timers in due order at their due times."""
        return self.advance_to(self.now + dt)

    def advance_to(self, target: float) -> list[Action]:
        """Move the clock to ``target`` (say, a timer's exact due time), firing what falls due on the way."""
        assert target >= self.now
        out: list[Action] = []
        while True:
            due = [(when, token) for token, when in self.timers.items() if when <= target]
            if not due:
                break
            when, token = min(due)
            del self.timers[token]
            self.now = max(self.now, when)
            out += self.send(TimerFired(token))
        self.now = target
        return out

    def request(self, verb: str, name: str) -> list[Action]:
        return self._run(self.tree.request(verb, name))

    def attach(self, parent: str, spec: ChildSpec) -> list[Action]:
        return self._run(self.tree.attach(parent, spec))

    def shutdown(self) -> list[Action]:
        return self._run(self.tree.shutdown())

    # ---- looking ----

    def pid(self, name: str) -> int | None:
        return self.live.get(name)

    def state(self, name: str) -> str:
        return str(self.tree.find(name).state)

    # ---- carrying out actions ----

    def _pop_live(self, name: str) -> int:
        pid = self.live.pop(name, None)
        assert pid is not None, f"{name} has no live process"
        self.signalled.pop(name, None)
        return pid

    def _run(self, actions: list[Action]) -> list[Action]:
        queue = deque(actions)
        done: list[Action] = []
        while queue:
            action = queue.popleft()
            done.append(action)
            self.log.append(action)
            if self.on_action is not None:
                self.on_action(action)
            queue.extend(self._act(action))
        return done

    def _act(self, action: Action) -> list[Action]:
        match action:
            case Spawn(name, spec):
                assert isinstance(spec, WorkerSpec)
                assert name not in self.live, f"{name} spawned while pid {self.live[name]} is alive"
                self.spawn_count[name] = self.spawn_count.get(name, 0) + 1
                if self.fail_next_spawns.get(name, 0) > 0:
                    self.fail_next_spawns[name] -= 1
                    return self.tree.handle(SpawnFailed(name, "no such file"))
                self._next_pid += 1
                self.live[name] = self._next_pid
                two_step = bool(spec.agent) or spec.ready == "notify"
                return self.tree.handle(Spawned(name, self._next_pid, ready=not two_step))
            case Signal(name, pid, sig):
                assert self.live.get(name) == pid, f"{name}: signal to pid {pid}, live {self.live.get(name)}"
                self.signalled.setdefault(name, []).append(sig)
            case StartTimer(token, delay):
                assert token not in self.timers
                assert delay >= 0
                self.timers[token] = self.now + delay
            case CancelTimer(token):
                assert token in self.timers, f"cancel of unknown timer {token}"
                del self.timers[token]
            case Halt():
                assert self.halt is None, "halted twice"
                self.halt = action
            case Log():
                pass
        return []


# ---- filters over action lists ----


def spawns(actions: list[Action]) -> list[str]:
    return [a.name for a in actions if isinstance(a, Spawn)]


def signals(actions: list[Action], sig: int | None = None) -> list[str]:
    return [a.name for a in actions if isinstance(a, Signal) and (sig is None or a.sig == sig)]


def halts(actions: list[Action]) -> list[Halt]:
    return [a for a in actions if isinstance(a, Halt)]


def timers(actions: list[Action]) -> list[StartTimer]:
    return [a for a in actions if isinstance(a, StartTimer)]


def kinds(actions: list[Action]) -> list[str]:
    """Actions without logs and timers, as short strings: 'spawn a', 'term b', 'kill c', 'halt 1'."""
    out = []
    for a in actions:
        match a:
            case Spawn(name, _):
                out.append(f"spawn {name}")
            case Signal(name, _, sig):
                out.append(f"{'term' if sig == SIGTERM else 'kill' if sig == SIGKILL else sig} {name}")
            case Halt(code, _):
                out.append(f"halt {code}")
    return out
