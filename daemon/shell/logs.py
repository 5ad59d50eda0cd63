"""Recent output of each child, kept in memory for `foundationctl logs NAME [-n N] [--follow]`.

A bounded ring per child (lines, not bytes, so a chatty child keeps its last N lines, never more), kept
after the child exits so that the lines before a crash can be read. Followers get every new line.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

Follower = Callable[[list[str]], bool]  # returns False once the reader is gone
DAEMON_NAME = "(foundationd)"  # the daemon's own log, like "(zygote)": never a child's name


class LogRings:
    def __init__(self, lines_per_child: int = 1000) -> None:
        self._size = lines_per_child
        self._rings: dict[str, deque[tuple[float, str]]] = {}
        self._followers: dict[str, list[Follower]] = {}

    def add(self, name: str, lines: list[str]) -> None:
        ring = self._rings.get(name)
        if ring is None:
            ring = self._rings[name] = deque(maxlen=self._size)
        now = time.time()
        ring.extend((now, line) for line in lines)
        followers = self._followers.get(name)
        if followers:
            self._followers[name] = [f for f in followers if f(lines)]

    def tail(self, name: str, count: int) -> list[tuple[float, str]]:
        ring = self._rings.get(name, ())
        return list(ring)[-count:] if count > 0 else []

    def last_starting(self, name: str, prefix: str) -> str | None:
        """The text after ``prefix`` of the child's last line, if that line starts with it."""
        ring = self._rings.get(name)
        if not ring or not ring[-1][1].startswith(prefix):
            return None
        return ring[-1][1][len(prefix):]

    def follow(self, name: str, follower: Follower) -> None:
        self._followers.setdefault(name, []).append(follower)

    def forget(self, name: str) -> None:
        self._rings.pop(name, None)
        self._followers.pop(name, None)

    def followers(self) -> int:
        return sum(len(f) for f in self._followers.values())


class RingHandler(logging.Handler):
    """The daemon's own log lines into the ring ``(foundationd)``, so ``foundationctl logs '(foundationd)'`` shows
    them where there is no journal to ask (``make run`` in a terminal, a container)."""

    def __init__(self, rings: LogRings) -> None:
        super().__init__(logging.INFO)
        self._rings = rings
        self.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._rings.add(DAEMON_NAME, self.format(record).splitlines() or [""])
        except Exception:  # logging must never raise into the loop
            self.handleError(record)
