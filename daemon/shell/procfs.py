"""One pass over /proc: every process's parent, process group, state, CPU time and resident memory.

Read only when someone asks (a metrics scrape, ``doctor``), never on a timer. One ``/proc/PID/stat`` read a
process, and no psutil: its ``children(recursive=True)`` scans all of /proc once per call, this once in all.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    state: str  # R, S, D, Z, T, ...
    cpu: float  # user + system seconds, its own and its reaped children's
    rss: int  # bytes
    comm: str


def scan() -> dict[int, Proc]:
    """Every process visible now, by pid (those that vanish meanwhile are left out)."""
    out: dict[int, Proc] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            proc = read(int(entry.name))
            if proc is not None:
                out[proc.pid] = proc
    return out


def read(pid: int) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    close = raw.rfind(b")")
    comm = raw[raw.find(b"(") + 1 : close].decode(errors="replace")
    fields = raw[close + 2 :].split()
    # fields[0] is stat's 3rd field (state): ppid 4th, pgrp 5th, utime, stime, cutime, cstime 14th-17th, rss 24th.
    cpu = sum(int(x) for x in fields[11:15]) / _TICK
    return Proc(pid, int(fields[1]), int(fields[2]), fields[0].decode(), cpu, int(fields[21]) * _PAGE, comm)


def descendants(procs: dict[int, Proc], root: int) -> list[Proc]:
    """Every process under ``root`` (children, their children, ...), from one scan."""
    children: dict[int, list[Proc]] = {}
    for proc in procs.values():
        children.setdefault(proc.ppid, []).append(proc)
    out: list[Proc] = []
    stack = list(children.get(root, ()))
    while stack:
        proc = stack.pop()
        out.append(proc)
        stack.extend(children.get(proc.pid, ()))
    return out


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def group_usage(procs: Iterable[Proc], pgids: set[int]) -> dict[int, tuple[float, int, int]]:
    """(CPU seconds, RSS bytes, open fds) of each process group in ``pgids``: what its processes use now."""
    out: dict[int, tuple[float, int, int]] = {}
    for proc in procs:
        if proc.pgid in pgids and proc.state != "Z":
            cpu, rss, fds = out.get(proc.pgid, (0.0, 0, 0))
            out[proc.pgid] = (cpu + proc.cpu, rss + proc.rss, fds + (open_fds(proc.pid) or 0))
    return out
