"""Agents' timers: after a delay, or every period, a ``{"tick": ref}`` notice in the agent's mailbox.

    timer {ref, after, every} ──> call_later(after) ──fire──> tick staged (unless one is still unhandled)
                                        ^                 │
                                        └─── every > 0 ───┘       done of the tick ──> ticked(): the next may come

A slow agent gets one tick per timer, not a growing pile of them. Timers belong to an incarnation: they end
with it (``clear``), and its successor sets its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from daemon.shell.loop import EventLoop, TimerHandle

MIN_TICK = 0.01  # seconds: the shortest period of an agent's periodic timer


@dataclass
class _AgentTimers:
    handles: dict[int, TimerHandle] = field(default_factory=dict)
    ticking: set[int] = field(default_factory=set)  # refs with a tick in the mailbox, not yet done
    every: dict[int, float] = field(default_factory=dict)  # periodic refs' periods (an upgrade hands them over)


class Timers:
    def __init__(self, loop: EventLoop, tick: Callable[[str, int], None]) -> None:
        """``tick(name, ref)`` stages the notice in the agent's mailbox."""
        self._loop = loop
        self._tick = tick
        self._agents: dict[str, _AgentTimers] = {}

    def set(self, name: str, ref: int, after: float, every: float | None) -> None:
        """(Re)arm timer ``ref`` of agent ``name``."""
        timers = self._agents.setdefault(name, _AgentTimers())
        if every is not None and every > 0:
            every = max(MIN_TICK, float(every))  # a periodic timer of a nanosecond would spin the loop

        def fire() -> None:
            timers.handles.pop(ref, None)
            if ref not in timers.ticking:
                timers.ticking.add(ref)
                self._tick(name, ref)
            if every is not None and every > 0:
                timers.handles[ref] = self._loop.call_later(float(every), fire)

        self.cancel(name, ref)
        if every is not None and every > 0:
            timers.every[ref] = every
        timers.handles[ref] = self._loop.call_later(max(0.0, after), fire)

    def cancel(self, name: str, ref: int) -> None:
        timers = self._agents.get(name)
        handle = timers.handles.pop(ref, None) if timers is not None else None
        if handle is not None:
            handle.cancel()
        if timers is not None:
            timers.every.pop(ref, None)

    def ticked(self, name: str, ref: int) -> None:
        """The agent is done with a tick of ``ref``: the next one may be queued."""
        timers = self._agents.get(name)
        if timers is not None:
            timers.ticking.discard(ref)

    def hand_over(self) -> list[dict[str, Any]]:
        """Every armed timer and unhandled tick, for the next image (an in-place upgrade; monotonic deadlines)."""
        return [{"name": name, "armed": [[ref, handle.deadline, timers.every.get(ref)]
                                         for ref, handle in timers.handles.items() if not handle.cancelled],
                 "ticking": sorted(timers.ticking)} for name, timers in self._agents.items()]

    def adopt(self, raw: list[dict[str, Any]]) -> None:
        """The previous image's timers (``hand_over``), each due when it would have been."""
        now = self._loop.clock()
        for item in raw:
            for ref, deadline, every in item["armed"]:
                self.set(item["name"], int(ref), float(deadline) - now, every)
            self._agents.setdefault(item["name"], _AgentTimers()).ticking.update(int(r) for r in item["ticking"])

    def clear(self, name: str) -> None:
        """The incarnation is gone: its timers with it."""
        timers = self._agents.pop(name, None)
        if timers is not None:
            for handle in timers.handles.values():
                handle.cancel()
