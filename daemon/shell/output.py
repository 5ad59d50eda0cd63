"""The daemon's own output (its log on stderr, children's lines on stdout), written without ever blocking.

A reader that stops reading (a stalled pipe, a paused terminal) must not freeze the event loop: every
write happens only when ``poll`` says the descriptor has room, a page at most (a pipe with room takes that
much without blocking); the rest waits in a bounded buffer flushed when the loop sees the descriptor
writable. Past the bound, new output is dropped and counted, and a notice says how much was lost once the
reader catches up. The descriptors stay in blocking mode: O_NONBLOCK would change them for every process
sharing them (the shell that started us).

When stderr is the journal (``JOURNAL_STREAM`` names it), log lines carry ``<N>`` priority prefixes, which
journald turns into real priorities.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import sys
import time
from collections.abc import Callable

CHUNK = 4096  # PIPE_BUF: a pipe that polls writable takes this much without blocking
PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class OutputSink:
    def __init__(self, fd: int, limit: int = 1 << 20) -> None:
        self.fd = fd
        self.limit = limit
        self.dropped = 0
        self._buf = bytearray()
        self._poll = select.poll()
        self._poll.register(fd, select.POLLOUT)
        self._add_writer: Callable[[int, Callable[[], None]], None] | None = None
        self._remove_writer: Callable[[int], None] | None = None
        self._watching = False

    def attach(
        self, add_writer: Callable[[int, Callable[[], None]], None], remove_writer: Callable[[int], None]
    ) -> None:
        self._add_writer, self._remove_writer = add_writer, remove_writer

    def detach(self) -> None:
        self._unwatch()
        self._add_writer = self._remove_writer = None

    def write(self, data: bytes) -> None:
        if not self._buf:
            data = self._write_now(data)
            if not data:
                return
        if len(self._buf) + len(data) > self.limit:
            self.dropped += len(data)
        else:
            self._buf += data
        self._watch()

    def flush(self, timeout: float = 1.0) -> None:
        """At exit: give a slow reader up to ``timeout`` seconds for what is buffered, then let it go."""
        deadline = time.monotonic() + timeout
        while self._buf and time.monotonic() < deadline:
            self._poll.poll(max(1, int((deadline - time.monotonic()) * 1000)))
            self._on_writable()
        self._unwatch()

    # ---- internals ----

    def _write_now(self, data: bytes) -> bytes:
        view = memoryview(data)
        while view:
            if not self._poll.poll(0):
                break
            try:
                written = os.write(self.fd, view[:CHUNK])
            except BlockingIOError:
                break
            except OSError:
                return b""  # the reader is gone (EPIPE, EBADF): nothing to keep it for
            view = view[written:]
        return bytes(view)

    def _on_writable(self) -> None:
        rest = self._write_now(bytes(self._buf))
        self._buf = bytearray(rest)
        if not self._buf:
            self._unwatch()
            if self.dropped:
                lost, self.dropped = self.dropped, 0
                self.write(f"foundationd: output was not read fast enough: {lost} bytes dropped\n".encode())

    def _watch(self) -> None:
        if self._watching or self._add_writer is None:
            return
        try:
            self._add_writer(self.fd, self._on_writable)
            self._watching = True
        except (PermissionError, OSError):
            pass  # a regular file cannot be watched, and never needs to be: writes to it do not block

    def _unwatch(self) -> None:
        if self._watching and self._remove_writer is not None:
            self._remove_writer(self.fd)
        self._watching = False


class SinkHandler(logging.Handler):
    """A logging handler that writes through an OutputSink, one line per record."""

    def __init__(self, sink: OutputSink, journal: bool) -> None:
        super().__init__()
        self.sink = sink
        self.journal = journal

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record).replace("\n", "\n  ")
            if self.journal:
                text = f"<{PRIORITIES.get(record.levelno, 6)}>{text}"
            self.sink.write((text + "\n").encode(errors="replace"))
        except Exception:  # logging must never take the daemon down
            self.handleError(record)


def stderr_is_journal() -> bool:
    """systemd sets JOURNAL_STREAM=dev:inode when stderr is connected to the journal."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    with contextlib.suppress(OSError, ValueError):
        st = os.fstat(sys.stderr.fileno())
        return st.st_dev == int(dev) and st.st_ino == int(ino)
    return False
