"""The narrow vocabulary between the pure supervision core and the imperative shell.

Events flow into ``SupervisionTree.handle``; actions flow out. All are frozen values, so a test can
feed a script of events and compare the actions with plain equality.

    shell ── Spawned / Ready / ExtendTimeout / SpawnFailed / Exited / TimerFired ──> core
    shell <── Spawn / Signal / StartTimer / CancelTimer / Log / Removed / Halt ── core
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from daemon.core.spec import WorkerSpec

# ---- events (shell -> core) ----


@dataclass(frozen=True)
class Spawned:
    """The process exists. ``ready`` False: it is still starting until a ``Ready`` event (or its timeout)."""

    name: str
    pid: int
    ready: bool = True


@dataclass(frozen=True)
class Ready:
    """A child that starts in two steps said it is ready (sd_notify READY=1, an agent's hello)."""

    name: str
    pid: int


@dataclass(frozen=True)
class ExtendTimeout:
    """A child asks for more time (sd_notify EXTEND_TIMEOUT_USEC): while it is starting, its start deadline, while
    it is being stopped, its SIGTERM->SIGKILL deadline becomes at least ``seconds`` from now. Otherwise ignored."""

    name: str
    pid: int
    seconds: float


@dataclass(frozen=True)
class SpawnFailed:
    name: str
    reason: str


@dataclass(frozen=True)
class Exited:
    """A worker's main process ended: ``status`` for a normal exit, ``signal`` when a signal killed it."""

    name: str
    pid: int
    status: int | None = None
    signal: int | None = None

    def describe(self) -> str:
        if self.signal is not None:
            try:
                return f"killed by {signal.Signals(self.signal).name}"
            except ValueError:
                return f"killed by signal {self.signal}"
        return f"exited with status {self.status}"


@dataclass(frozen=True)
class TimerFired:
    token: int


Event = Spawned | Ready | ExtendTimeout | SpawnFailed | Exited | TimerFired

# ---- actions (core -> shell) ----


@dataclass(frozen=True)
class Spawn:
    name: str
    spec: WorkerSpec


@dataclass(frozen=True)
class Signal:
    """Send ``sig`` to the worker's process group (whose leader is ``pid``)."""

    name: str
    pid: int
    sig: int


@dataclass(frozen=True)
class StartTimer:
    token: int
    delay: float


@dataclass(frozen=True)
class CancelTimer:
    token: int


@dataclass(frozen=True)
class Log:
    level: str  # "debug" | "info" | "notice" | "warning" | "error"
    message: str


@dataclass(frozen=True)
class Removed:
    """A detached child has stopped and left the tree; the shell forgets what it kept for these names."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class Halt:
    """The root supervisor is done: 0 after an orderly shutdown, non-zero after it failed."""

    code: int
    reason: str


Action = Spawn | Signal | StartTimer | CancelTimer | Log | Removed | Halt
