"""Recent output of each child, kept in memory for `foundationctl logs NAME [-n N] [--stream S] [--follow]`.

A bounded ring per child (lines, not bytes, so a chatty child keeps its last N lines, never more), kept
after the child exits so that the lines before a crash can be read. Each line keeps the stream it came from:
``stdout`` or ``stderr`` (the child's two pipes), or ``daemon`` for what foundationd itself wrote there (the
start and exit markers, and the daemon's own log in ``(foundationd)``). Followers get every new line.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Collection

STDOUT, STDERR, DAEMON = "stdout", "stderr", "daemon"
STREAMS = (STDOUT, STDERR)  # what `logs --stream` chooses from; the daemon's markers come with either
Line = tuple[float, str, str]  # (time.time() when read, stream, text)
Follower = Callable[[str, list[str]], bool]  # (stream, new lines) -> False once the reader is gone
DAEMON_NAME = "(foundationd)"  # the daemon's own log, like "(zygote)": never a child's name


class LogRings:
    def __init__(self, lines_per_child: int = 1000) -> None:
        self._size = lines_per_child
        self._rings: dict[str, deque[Line]] = {}
        self._followers: dict[str, list[Follower]] = {}

    def add(self, name: str, lines: list[str], stream: str = DAEMON, now: float | None = None) -> None:
        ring = self._rings.get(name)
        if ring is None:
            ring = self._rings[name] = deque(maxlen=self._size)
        now = time.time() if now is None else now
        ring.extend((now, stream, line) for line in lines)
        followers = self._followers.get(name)
        if followers:
            self._followers[name] = [f for f in followers if f(stream, lines)]

    def tail(self, name: str, count: int, streams: Collection[str] | None = None) -> list[Line]:
        """The last ``count`` lines of ``name``, oldest first; only those of ``streams`` when given."""
        ring = self._rings.get(name, ())
        if count <= 0:
            return []
        if streams is None:
            return list(ring)[-count:]
        picked: list[Line] = []
        for entry in reversed(ring):
            if entry[1] in streams:
                picked.append(entry)
                if len(picked) == count:
                    break
        return picked[::-1]

    def last_starting(self, name: str, prefix: str, stream: str = STDERR) -> str | None:
        """The text after ``prefix`` of the child's last line on ``stream``, if that line starts with it."""
        for _, where, line in reversed(self._rings.get(name, ())):
            if where == stream:
                return line[len(prefix):] if line.startswith(prefix) else None
            if where == DAEMON:  # a marker: the run that line would belong to is over
                return None
        return None

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
