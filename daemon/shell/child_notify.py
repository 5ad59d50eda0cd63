"""sd_notify for children: systemd-aware programs get readiness, status and a watchdog under Foundation.

A child declared ``ready = "notify"`` gets ``NOTIFY_SOCKET`` pointing at one datagram socket in the runtime
directory. Every datagram carries the sender's credentials (SO_PASSCRED); the sender's process group must
be a live child's, the group the daemon created for it, so one child cannot report for another.

    READY=1                the child is started: its supervisor moves on to the next sibling
    STATUS=...             shown in `foundationctl status --json` (``status``) until the child exits
    ERRNO=N, EXIT_STATUS=N shown in `foundationctl status --json` (``errno``, ``exit_status``) until its next start
    EXTEND_TIMEOUT_USEC=N  while starting: its start deadline becomes at least N us from now (it may pass
                           ``start_timeout``); while being stopped: its SIGTERM->SIGKILL deadline, likewise (not
                           with ``shutdown`` "brutal_kill"/"infinity"); once running: ignored
    WATCHDOG=1             resets the child's watchdog (``watchdog`` seconds), else it is killed and restarted;
                           armed at READY=1 (or a first WATCHDOG=1), disarmed when its stop begins: from then on
                           only the SIGKILL deadline counts, as under systemd
    WATCHDOG=trigger       killed and restarted now, as after a watchdog timeout (with or without ``watchdog``)
    WATCHDOG_USEC=N        a child with ``watchdog``: its interval is N us from now on, for this run (0: off); the
                           timer restarts with it. Without ``watchdog``: ignored
    STOPPING=1             logged; the daemon still decides on the exit as on any other

Numbers are decimal, ASCII digits only; one that does not parse or is out of range (a microsecond value over a
year, an errno over 4095, an exit status over 255) is ignored with a warning. Other fields are ignored.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path

from daemon.shell.socket_path import check_startup_socket

log = logging.getLogger("foundationd.notify")

SOCKET_NAME = "notify.sock"
MAX_DATAGRAM = 4096
_CRED = struct.Struct("3i")
USEC_MAX = 366 * 86_400 * 1_000_000  # EXTEND_TIMEOUT_USEC, WATCHDOG_USEC: more than a year is a mistake
ERRNO_MAX = 4095  # Linux's MAX_ERRNO
EXIT_STATUS_MAX = 255


class ChildNotifySocket:
    def __init__(
        self,
        runtime_dir: Path,
        add_reader: Callable[[int, Callable[[], None]], None],
        remove_reader: Callable[[int], None],
        child_of_group: Callable[[int], str | None],
        on_message: Callable[[str, int, dict[str, str]], None],
    ) -> None:
        """``child_of_group(pgid)``: the notify child leading that group, if any; ``on_message(name, pid, fields)``."""
        self.path = runtime_dir / SOCKET_NAME
        self._remove_reader = remove_reader
        self._child_of_group = child_of_group
        self._on_message = on_message
        check_startup_socket(self.path)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        self._sock.bind(str(self.path))
        os.chmod(self.path, 0o666)  # children may run as other users; the credential check decides
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        add_reader(self._sock.fileno(), self._on_readable)

    def close(self) -> None:
        self._remove_reader(self._sock.fileno())
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def drain(self) -> None:
        """Handle what is queued now; foundationd calls it before it reaps, so that a datagram sent just before
        an exit (``EXIT_STATUS=``, ``ERRNO=``) is read while the sender's zombie still names its group."""
        self._on_readable()

    def _on_readable(self) -> None:
        for _ in range(256):  # bounded per turn: a chatty child cannot starve the loop
            try:
                data, ancdata, _, _ = self._sock.recvmsg(MAX_DATAGRAM, socket.CMSG_SPACE(_CRED.size))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("notify socket: %s", exc)
                return
            pid = _sender_pid(ancdata)
            if pid is None:
                continue
            try:
                pgid = os.getpgid(pid)
            except ProcessLookupError:
                continue
            name = self._child_of_group(pgid)
            if name is None:
                log.warning("notify socket: ignored a message from pid %d, not in a notify child's group", pid)
                continue
            self._on_message(name, pgid, parse(data))


def parse(data: bytes) -> dict[str, str]:
    """``KEY=VALUE`` lines, as sd_notify(3) sends them; malformed lines are skipped."""
    fields = {}
    for line in data.decode(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key:
            fields[key] = value
    return fields


def parse_uint(value: str, maximum: int) -> int | None:
    """A decimal number from 0 to ``maximum`` in ASCII digits (no sign, space, underscore or other script's
    digits, all of which ``int()`` would take), else None."""
    if not 0 < len(value) <= 20 or not value.isascii() or not value.isdigit():
        return None
    number = int(value)
    return number if number <= maximum else None


def _sender_pid(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= _CRED.size:
            return _CRED.unpack(payload[: _CRED.size])[0]
    return None
