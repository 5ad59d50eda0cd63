"""Restart workers whose memory passes their ``max_memory``: RSS read from /proc, on a timer.

    poke() (a child started or stopped) ──> armed only while watched() is non-empty
    tick ──> RSS of each watched worker's process group ──> kill(name, pid, reason) when over ──> re-arm

* What is counted: the resident set of the worker's whole process group, i.e. the leader and every helper
  it forked that is still in its group. The group is the unit the daemon stops and kills, so a worker cannot
  dodge its bound by doing the work in a child; a process that left the group (setsid, setpgid) is neither
  counted nor killed with it. Shared pages are counted in each process that maps them (plain RSS, as ``ps``).
  The group's processes are found from its leader down (and among the orphans foundationd adopted), so a tick
  reads a few files per watched process, not all of /proc.
* No wake-ups without work: the timer runs only while some running child sets ``max_memory``. A tick that
  finds none does not re-arm; the next ``poke`` after a spawn does.
* The daemon's ``kill`` SIGKILLs the worker; its supervisor sees an abnormal exit and restarts it, which
  counts toward restart intensity like any crash. A worker is killed once per pid, not at every tick while
  its death is being processed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

MiB = 1 << 20
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

Watched = list[tuple[str, int, int]]  # (name, pid, max_memory) of each running child that sets max_memory


class MemoryWatch:
    def __init__(
        self,
        call_later: Callable[[float, Callable[[], None]], Any],
        watched: Callable[[], Watched],
        kill: Callable[[str, int, str], None],
        interval: float = 1.0,
    ) -> None:
        self._call_later = call_later
        self._watched = watched
        self._kill = kill
        self._interval = interval
        self._handle: Any = None
        self._killed: set[tuple[str, int]] = set()

    @property
    def armed(self) -> bool:
        return self._handle is not None

    def poke(self) -> None:
        """Call after any child starts or stops: arms the timer if a running child sets max_memory."""
        if self._handle is None and self._watched():
            self._handle = self._call_later(self._interval, self._tick)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        self._handle = None
        watched = self._watched()
        if not watched:
            self._killed.clear()
            return
        usage = group_rss({pid for _, pid, _ in watched})
        self._killed &= {(name, pid) for name, pid, _ in watched}
        self._handle = self._call_later(self._interval, self._tick)
        for name, pid, limit in watched:
            rss = usage.get(pid, 0)
            if rss > limit and (name, pid) not in self._killed:
                self._killed.add((name, pid))
                self._kill(name, pid, f"rss {_mib(rss)} over max_memory {_mib(limit)}")


def group_rss(leaders: set[int], reaper: int | None = None) -> dict[int, int]:
    """Bytes resident in each of the process groups led by ``leaders`` (0 for a group that is gone).

    Only the groups' own processes are read, never all of /proc: each leader's descendants that are still in its
    group (``/proc/PID/task/*/children``, recursively), and the orphans of those groups that ``reaper`` (this
    process: foundationd is a child subreaper) adopted, which stay in their group. A getpgid and a statm read
    per process visited.
    """
    totals = dict.fromkeys(leaders, 0)
    own = os.getpid() if reaper is None else reaper
    stack = list(leaders) + [pid for pid in _children(own) if pid not in totals]
    seen: set[int] = set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            pgid = os.getpgid(pid)
        except OSError:
            continue
        if pgid not in totals:
            continue  # another group (a worker without max_memory, a child that left with setsid): not ours
        totals[pgid] += _resident(pid)
        stack.extend(_children(pid))
    return totals


def _children(pid: int) -> list[int]:
    """The children of every thread of ``pid`` (a child belongs to the thread that forked it)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as file:
                found.extend(int(child) for child in file.read().split())
        except OSError:
            continue
    return found


def _resident(pid: int) -> int:
    """The resident set of ``pid`` in bytes (statm's second field, as ps and psutil count it), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as file:
            return int(file.read().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def _mib(size: int) -> str:
    return f"{size / MiB:.1f}".removesuffix(".0") + " MiB"
