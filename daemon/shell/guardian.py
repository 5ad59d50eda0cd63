"""The guardian: kills what a SIGKILLed foundationd would leave behind, and foundationd's side of it.

    foundationd ──"+PGID\\n" at each spawn, "-PGID\\n" once the group is cleaned up──> pipe ──> guardian
    pipe at EOF (foundationd is gone, however it died) ──> guardian: SIGKILL every group still listed, exit

Why: a child's parent-death signal reaches only the child. What the child started (a shell's commands, a
worker pool) lives in the child's process group and would outlive a SIGKILLed daemon; under systemd the
cgroup covers it (KillMode=mixed), anywhere else nothing would. The guardian is a second process that
outlives foundationd by the few milliseconds this takes: started with ``python -I -S`` by path (stdlib only,
~8 MiB, no wake-ups: it sleeps in ``read``), in its own process group, with no parent-death signal, and
with the pipe's read end as its stdin. Only foundationd holds the write end (close-on-exec), so EOF means
foundationd has exited. After an orderly shutdown the list is empty and the guardian just exits.

A group id is killed only while foundationd listed it: its leader died at most milliseconds earlier (by its
parent-death signal), and the id cannot name another group unless the whole pid space wrapped meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable

MAX_LINE = 32  # "+4194304\n" is 9 bytes; anything longer is not ours
PIPE_SIZE = 1 << 20  # room for ~100,000 records if the guardian is slow to be scheduled


# ---- the guardian process ----


def main() -> int:
    default_signals()
    groups: set[int] = set()
    pending = b""
    while True:
        try:
            data = os.read(0, 65536)
        except InterruptedError:
            continue
        if not data:
            break
        pending += data
        *lines, pending = pending.split(b"\n")
        if len(pending) > MAX_LINE:
            pending = b""
        for line in lines:
            apply(groups, line)
    for pgid in sorted(groups):
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)
    if groups:  # to foundationd's log pipe, which may be gone with it
        with contextlib.suppress(OSError):
            print(f"foundation-guardian: foundationd is gone; killed process groups {sorted(groups)}",
                  file=sys.stderr, flush=True)
    return 0


def default_signals() -> None:
    """What foundationd inherited (SIGINT and SIGQUIT ignored when a script put it in the background) is not ours:
    every signal at its default but the two Python itself ignores, none blocked, as for any child."""
    for sig in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP, signal.SIGPIPE, signal.SIGXFSZ}:
        if signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def apply(groups: set[int], line: bytes) -> None:
    """One record; anything else is ignored (only foundationd writes here, but a bad line must not kill us)."""
    sign, digits = line[:1], line[1:]
    if not digits.isdigit() or len(digits) > 10:
        return
    pgid = int(digits)
    if pgid <= 1:
        return
    if sign == b"+":
        groups.add(pgid)
    elif sign == b"-":
        groups.discard(pgid)


# ---- foundationd's side ----


Launch = Callable[[list[str], int], int]  # argv, read end of the pipe (its stdin) -> pid


class GuardianLink:
    """Starts the guardian, tells it about groups, and starts it again (with every group) if it dies."""

    MAX_RESTARTS = 5  # in a row without a record written in between: something is wrong, say so and stop

    def __init__(self, launch: Launch, kill: Callable[[int], None], warn: Callable[[str], None]) -> None:
        self._launch = launch
        self._kill = kill
        self._warn = warn
        self.groups: set[int] = set()
        self.pid: int | None = None
        self._fd = -1
        self._restarts = 0
        self.closing = False

    def start(self) -> None:
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        launched = False
        try:
            with contextlib.suppress(OSError):  # a bigger pipe only makes a full one rarer
                import fcntl  # noqa: PLC0415 - the guardian process itself never needs it

                fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            argv = [sys.executable, "-I", "-S", os.path.abspath(__file__)]
            self.pid = self._launch(argv, read_fd)
            launched = True
        finally:
            os.close(read_fd)
            if not launched:
                os.close(write_fd)
        os.set_blocking(write_fd, False)
        self._fd = write_fd
        self._write(b"".join(b"+%d\n" % pgid for pgid in sorted(self.groups)))

    @property
    def fd(self) -> int:
        return self._fd

    def adopt(self, pid: int, fd: int, groups: set[int]) -> None:
        """The guardian and pipe the previous image handed over (in-place upgrade): no EOF, nothing killed."""
        os.set_inheritable(fd, False)
        os.set_blocking(fd, False)
        self.pid, self._fd, self.groups = pid, fd, groups

    def add(self, pgid: int) -> None:
        self.groups.add(pgid)
        self._write(b"+%d\n" % pgid)

    def remove(self, pgid: int) -> None:
        self.groups.discard(pgid)
        self._write(b"-%d\n" % pgid)

    def exited(self, description: str) -> None:
        """The guardian died while foundationd runs: start another, unless that keeps happening."""
        self.pid = None
        self._close_fd()
        if self.closing:
            return
        self._restarts += 1
        if self._restarts > self.MAX_RESTARTS:
            self._warn(f"guardian {description}; given up after {self.MAX_RESTARTS} restarts: grandchildren may "
                       "outlive a SIGKILLed foundationd")
            return
        self._warn(f"guardian {description}; starting another")
        self.start()

    def close(self) -> None:
        """At the very end: EOF makes the guardian exit (killing anything still listed, which should be nothing)."""
        self.closing = True
        self._close_fd()

    def _write(self, data: bytes) -> None:
        if self._fd < 0 or not data:
            return
        try:
            written = os.write(self._fd, data)
        except BrokenPipeError:
            return  # it died; exited() starts another with the whole list
        except BlockingIOError:
            written = 0
        if written < len(data):  # a partial record would corrupt the stream: start a new guardian with the list
            self._warn("guardian is not reading its pipe; replacing it")
            self._close_fd()
            if self.pid is not None:
                self._kill(self.pid)
            return
        self._restarts = 0

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


if __name__ == "__main__":
    # No interpreter teardown (~10 ms): foundationd waits for this exit at the end of its own shutdown.
    status = main()
    sys.stderr.flush()
    os._exit(status)
