"""Children's output into files, for hosts without journald: ``[daemon] log_dir`` and each child's ``log_file``,
rotated by size (daemon/core/logfiles.py decides which file and when; this module does the IO).

    ChildOutput: lines, start and exit markers ──> LogFiles.write(name, stream, lines) ──> one write() (O_APPEND)
                                                          └─ past max_size first: KEEP renames, a new file

Each line is ``2026-12-04T03:55:01.123+01:00 text``; a line from stderr is ``... ! text``, the daemon's markers
``... -- started (pid 4301)``, as ``foundationctl logs --timestamps`` shows them.

This runs on the daemon's one loop, so its IO is bounded by what a write costs: one write() per batch of lines a
pipe gave (64 KiB at most), no fsync, no read; a rotation is at most KEEP (<= 100) renames and an open. A child's
file is opened at its first line and stays open while the child is in the tree; it is closed when the child
leaves the tree, when a reload changes where it goes, and when foundationd exits. Only a regular file is
written: a FIFO, a terminal or a socket could block the loop, and is refused. A file that fails (a full disk, a
directory removed) loses its lines meanwhile: the daemon's log says so once, the file is tried again at most
every ``RETRY`` seconds, and when it works again the loss is told in the file and in the log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass

from daemon.core.logfiles import LogSettings, LogTarget, must_rotate, rotation, target_of
from daemon.core.spec import WorkerSpec
from daemon.shell.logs import DAEMON, STDERR

log = logging.getLogger("foundationd")

RETRY = 5.0  # seconds between attempts at a file that failed
FILE_MODE = 0o640
DIR_MODE = 0o750
OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
MARKS = {STDERR: b"! ", DAEMON: b""}  # stdout: nothing, as in `foundationctl logs`


@dataclass
class _File:
    spec: WorkerSpec
    target: LogTarget | None
    fd: int | None = None
    size: int = 0
    retry_at: float = 0.0
    lost: int = 0  # bytes not written since the file failed
    failure: str | None = None  # what the daemon's log was told, once


class LogFiles:
    def __init__(self, settings: LogSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._files: dict[str, _File] = {}
        self._stamp = (-1, b"")  # the last second formatted, and its text

    def configure(self, settings: LogSettings) -> None:
        """A reload's ``[daemon]`` log settings: each child's target again; a changed one is closed (and the new one
        opened at its next line)."""
        self._settings = settings
        for entry in list(self._files.values()):
            self.started(entry.spec)

    def started(self, spec: WorkerSpec) -> None:
        """A child (re)starts with ``spec``: its file, kept open if the target is the same as before."""
        target = target_of(spec, self._settings)
        entry = self._files.get(spec.name)
        if entry is not None and entry.target == target:
            entry.spec = spec
            return
        self.forget(spec.name)
        self._files[spec.name] = _File(spec, target)

    def write(self, name: str, stream: str, lines: list[bytes], now: float) -> None:
        entry = self._files.get(name)
        if entry is None or entry.target is None:
            return
        stamp = self._format(now)
        mark = MARKS.get(stream, b"")
        data = b"".join(stamp + mark + line + b"\n" for line in lines)
        if entry.fd is None and not self._open(name, entry, len(data)):
            return
        try:
            if must_rotate(entry.size, len(data), entry.target.max_size):
                self._rotate(entry)
            self._write_all(entry, data)
        except OSError as exc:
            self._failed(name, entry, exc, len(data))

    def forget(self, name: str) -> None:
        entry = self._files.pop(name, None)
        if entry is not None:
            self._close(entry)

    def close(self) -> None:
        for name in list(self._files):
            self.forget(name)

    def open_count(self) -> int:
        return sum(entry.fd is not None for entry in self._files.values())

    # ---- internals ----

    def _open(self, name: str, entry: _File, incoming: int) -> bool:
        """Open the child's file (and its directory if need be); False while it fails (the lines are lost)."""
        assert entry.target is not None
        if entry.failure is not None and self._clock() < entry.retry_at:
            entry.lost += incoming
            return False
        path = entry.target.path
        try:
            os.makedirs(os.path.dirname(path), mode=DIR_MODE, exist_ok=True)
            fd = os.open(path, OPEN_FLAGS, FILE_MODE)
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):
                    raise OSError("not a regular file (writing to it could block foundationd)")
            except OSError:
                os.close(fd)
                raise
        except OSError as exc:
            self._failed(name, entry, exc, incoming)
            return False
        entry.fd, entry.size = fd, info.st_size
        if entry.failure is not None:
            lost, entry.lost, entry.failure = entry.lost, 0, None
            log.info("%s: log file %s is written again; %d bytes of output were lost meanwhile", name, path, lost)
            with contextlib.suppress(OSError):
                self._write_all(entry, self._format(time.time()) + f"-- {lost} bytes of output lost\n".encode())
        return True

    def _rotate(self, entry: _File) -> None:
        assert entry.target is not None
        self._close(entry)
        for source, destination in rotation(entry.target.path, entry.target.keep):
            with contextlib.suppress(FileNotFoundError):
                if destination is None:
                    os.unlink(source)
                else:
                    os.rename(source, destination)
        entry.fd, entry.size = os.open(entry.target.path, OPEN_FLAGS, FILE_MODE), 0

    def _write_all(self, entry: _File, data: bytes) -> None:
        assert entry.fd is not None
        view = memoryview(data)
        while view:  # a regular file takes it all at once unless the disk is full (then write() raises)
            written = os.write(entry.fd, view)
            entry.size += written
            view = view[written:]

    def _failed(self, name: str, entry: _File, exc: OSError, incoming: int) -> None:
        assert entry.target is not None
        self._close(entry)
        entry.retry_at = self._clock() + RETRY
        entry.lost += incoming
        why = exc.strerror or str(exc)
        if entry.failure != why:
            entry.failure = why
            log.warning("%s: cannot write log file %s: %s; its output is not kept there until that is fixed "
                        "(tried again every %g s)", name, entry.target.path, why, RETRY)

    def _close(self, entry: _File) -> None:
        if entry.fd is not None:
            os.close(entry.fd)
            entry.fd = None

    def _format(self, now: float) -> bytes:
        """``2026-12-04T03:55:01.123+01:00 `` in local time; the second's part is formatted once per second."""
        second = int(now)
        if second != self._stamp[0]:
            local = time.localtime(second)
            zone = time.strftime("%z", local)
            text = time.strftime("%Y-%m-%dT%H:%M:%S", local)
            self._stamp = (second, text.encode() + b".%03d" + f"{zone[:3]}:{zone[3:]} ".encode())
        return self._stamp[1] % int(now % 1 * 1000)
