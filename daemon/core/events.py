"""What the supervision core decided, as data: the events later parts read (the event stream, metrics, health
gates, rollouts; DESIGN 3.9), beside the log lines that say the same for people.

    SupervisionTree ──(every transition, start, exit, restart, escalation)──> events ──> take_events() ──> app

Each event is a frozen value with the time of the core's injected clock (``at``, monotonic seconds) and a
``type`` named as in DESIGN 3.9 where one fits. ``to_dict()`` is plain JSON-able data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class CoreEvent:
    type: ClassVar[str] = "core_event"
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class Transition(CoreEvent):
    """A node's state changed (every change passes through one method of the tree)."""

    type: ClassVar[str] = "transition"
    name: str
    old: str
    new: str


@dataclass(frozen=True)
class ChildStarted(CoreEvent):
    """A worker is running (and ready, for a notify child or an agent)."""

    type: ClassVar[str] = "child_started"
    name: str
    pid: int


@dataclass(frozen=True)
class ChildExited(CoreEvent):
    """A worker's process ended; ``reason`` as the log says it (``exited with status 1``, ``killed by SIGKILL``),
    ``status`` or ``signal`` as numbers; ``expected`` when the core had asked it to stop."""

    type: ClassVar[str] = "child_exited"
    name: str
    pid: int
    reason: str
    expected: bool
    status: int | None = None  # the exit status, or
    signal: int | None = None  # the number of the signal that killed it


@dataclass(frozen=True)
class StartFailed(CoreEvent):
    """A worker could not be started, or ended before it was ready."""

    type: ClassVar[str] = "start_failed"
    name: str
    reason: str


@dataclass(frozen=True)
class ChildRestarted(CoreEvent):
    """The core decided to restart ``name`` (after ``delay`` seconds of backoff), counted in its supervisor."""

    type: ClassVar[str] = "child_restarted"
    name: str
    supervisor: str
    restarts: int
    delay: float


@dataclass(frozen=True)
class ChildParked(CoreEvent):
    """A child with ``on_intensity = "park"`` would have exceeded its supervisor's intensity: it is left down."""

    type: ClassVar[str] = "child_parked"
    name: str
    supervisor: str
    reason: str


@dataclass(frozen=True)
class IntensityExceeded(CoreEvent):
    """More than ``intensity`` restarts within ``period`` seconds: the supervisor stops its children and fails."""

    type: ClassVar[str] = "intensity_exceeded"
    supervisor: str
    intensity: int
    period: float
    last: str


@dataclass(frozen=True)
class SupervisorFailed(CoreEvent):
    """A supervisor fails (intensity exceeded, or a child failed its first start): a crash in its parent."""

    type: ClassVar[str] = "supervisor_failed"
    supervisor: str
    reason: str


@dataclass(frozen=True)
class Halted(CoreEvent):
    """The root supervisor is down: the daemon exits with ``code``."""

    type: ClassVar[str] = "halted"
    code: int
    reason: str
