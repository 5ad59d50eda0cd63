"""Liveness: an agent that stops talking (no frame for ``limit(name)`` seconds) is disconnected and killed.

    hello ──> arm() ──every heartbeat──> check: now - last_seen > limit(name)? ──yes──> on_silent(name)
                 ^                          │ (runs only while some agent is connected)
                 └──── any still connected ─┘

Every frame counts as a sign of life (the session's ``last_seen``); an idle agent sends ``heartbeat`` frames at
the interval its ``welcome`` gave it (Paranoid Pirate). A heartbeat with ``"busy": S`` says the agent will be silent
for up to S seconds (a handler running a long workflow step cannot beat); ``"busy": 0`` ends that.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from daemon.broker.peers import Session
from daemon.shell.loop import EventLoop, TimerHandle

log = logging.getLogger("foundationd.broker")


class Liveness:
    def __init__(self, loop: EventLoop, heartbeat: float, limit: Callable[[str], float],
                 connected: Callable[[], list[Session]], on_silent: Callable[[str], None]) -> None:
        self._loop = loop
        self.heartbeat = heartbeat
        self._limit = limit
        self._connected = connected
        self._on_silent = on_silent
        self._timer: TimerHandle | None = None

    def arm(self) -> None:
        if self._timer is None:
            self._timer = self._loop.call_later(self.heartbeat, self._check)

    def _check(self) -> None:
        self._timer = None
        now = self._loop.clock()
        for session in self._connected():
            if session.name and now - max(session.last_seen, session.busy_until) > self._limit(session.name):
                log.warning("%s sent no heartbeat for %.1fs; killing it", session.name, now - session.last_seen)
                self._on_silent(session.name)
        if self._connected():
            self.arm()
