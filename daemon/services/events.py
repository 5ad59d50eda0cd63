"""The event stream (DESIGN 3.9): one stream of typed events, the last N kept in memory, with followers.

    SupervisionTree ──take_events() per batch──> from_core() ──┐     (+ ``cause`` of a kill the daemon made:
    services ──publish(type, **fields)─────────────────────────┤      watchdog, heartbeat, max_memory)
      (broker: message_rejected; later workflow_step, ...)     v
                                                        EventStream ── ring of the last ``keep`` events
                                                               ├──> followers (``events --follow``), once a batch
                                                               └──> listeners (restart history, metrics counters)

An event is a plain dict, one JSON object a line on the wire: ``{"seq", "ts", "type", ...}``; ``ts`` is wall-clock
seconds (a core event's monotonic ``at`` is turned into it), ``seq`` counts from 1 since the daemon started, so a
reader can tell that it missed some. The core's ``transition`` events are not in the stream (``child_started``,
``child_exited`` and the others say the same for people; ``status`` shows states). Pure: both clocks are injected.
"""

from __future__ import annotations

import signal
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from daemon.core.events import ChildExited, CoreEvent, Transition

Event = dict[str, Any]
Follower = Callable[[list[Event]], bool]  # returns False once its reader has gone
Listener = Callable[[list[Event]], None]

KEEP = 10_000  # events kept in memory
KILL_CAUSES = ("watchdog", "heartbeat", "max_memory")  # why the daemon itself killed a child


class EventStream:
    def __init__(self, wall: Callable[[], float], mono: Callable[[], float], keep: int = KEEP) -> None:
        self._wall, self._mono = wall, mono
        self._ring: deque[Event] = deque(maxlen=keep)
        self._followers: list[Follower] = []
        self.listeners: list[Listener] = []
        self.seq = 0
        self.counts: dict[str, int] = {}  # events of each type since the daemon started (metrics)
        self._causes: dict[int, str] = {}  # pid -> why the daemon killed it, until its exit is seen

    # ---- in ----

    def publish(self, type: str, **fields: Any) -> Event:
        """One event of a service (``message_rejected``, ``workflow_step``, ...), now."""
        event = {"ts": self._wall(), "type": type, **fields}
        self.extend([event])
        return event

    def kill_cause(self, pid: int, cause: str) -> None:
        """The daemon is about to kill ``pid`` for ``cause`` (one of KILL_CAUSES): said on its ``child_exited``."""
        self._causes[pid] = cause

    def from_core(self, happened: Iterable[CoreEvent]) -> None:
        """The core's events of one batch, as stream events (oldest first)."""
        wall, mono = self._wall(), self._mono()
        self.extend([self._convert(ev, wall - mono) for ev in happened if not isinstance(ev, Transition)])

    def extend(self, events: list[Event]) -> None:
        if not events:
            return
        for event in events:
            self.seq += 1
            event["seq"] = self.seq
            self.counts[event["type"]] = self.counts.get(event["type"], 0) + 1
        self._ring.extend(events)
        for listener in self.listeners:
            listener(events)
        if self._followers:
            self._followers = [f for f in self._followers if f(events)]

    def _convert(self, ev: CoreEvent, offset: float) -> Event:
        fields = ev.to_dict()
        event = {"ts": round(fields.pop("at") + offset, 6), **fields}
        if isinstance(ev, ChildExited):
            if ev.signal is not None:
                event["signal"] = signal_name(ev.signal)
            cause = self._causes.pop(ev.pid, None)
            if cause is not None and not ev.expected:
                event["cause"] = cause
        return event

    # ---- out ----

    def tail(self, count: int, match: Callable[[Event], bool] | None = None) -> list[Event]:
        """The last ``count`` events (that ``match``), oldest first."""
        if count <= 0:
            return []
        out: list[Event] = []
        for event in reversed(self._ring):
            if match is None or match(event):
                out.append(event)
                if len(out) == count:
                    break
        out.reverse()
        return out

    def follow(self, follower: Follower) -> None:
        self._followers.append(follower)

    @property
    def followers(self) -> int:
        return len(self._followers)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def matcher(name: str | None, types: Iterable[str] = ()) -> Callable[[Event], bool] | None:
    """A filter on the child (or supervisor) an event is about, and on its type; None when there is none."""
    wanted = frozenset(types)
    if name is None and not wanted:
        return None

    def match(event: Event) -> bool:
        if wanted and event.get("type") not in wanted:
            return False
        return name is None or name in (event.get("name"), event.get("supervisor"), event.get("to"))

    return match


def render(event: Event) -> str:
    """One line for people: ``12:03:04.120 child_exited ticker pid=42 reason="killed by SIGKILL"``."""
    stamp = event.get("ts")
    when = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) + f".{int(stamp % 1 * 1000):03d}"
            if isinstance(stamp, int | float) else "-")
    subject = event.get("name") or event.get("supervisor") or ""
    skip = {"ts", "type", "seq", "name"} | (set() if event.get("name") else {"supervisor"})
    rest = " ".join(f"{key}={_value(value)}" for key, value in event.items() if value is not None and key not in skip)
    return " ".join(part for part in (when, str(event.get("type", "?")), str(subject), rest) if part)


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value if value and " " not in value and '"' not in value else '"' + value.replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "-"
    return str(value)
