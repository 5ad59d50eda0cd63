"""The daemon's one wait point: file descriptors, signals and a timer heap in a single epoll call.

Nothing here polls: with no ready descriptor and no timer due, ``epoll_wait`` sleeps until one is.
Signal handlers do nothing but let CPython write the signal number to a wake-up socket, which the
loop reads like any other descriptor (the uvicorn / CPython pattern), so every reaction to a signal
runs on the loop, between other events, never inside a handler.
"""

from __future__ import annotations

import bisect
import contextlib
import heapq
import itertools
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_WAIT = 86_400.0
TURN_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)  # seconds
MIN_COMPACT = 64
READ, WRITE = select.EPOLLIN, select.EPOLLOUT


@dataclass
class TurnStats:
    """How long each turn of the loop was busy (from epoll's return to the next wait): the most any ready event
    waited to be looked at, i.e. the loop's lag. Counted per bucket of TURN_BUCKETS (a histogram for metrics);
    two clock reads a turn, and nothing while the loop sleeps."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(TURN_BUCKETS) + 1))
    total: float = 0.0
    longest: float = 0.0

    def record(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(TURN_BUCKETS, seconds)] += 1
        self.total += seconds
        self.longest = max(self.longest, seconds)


@dataclass(order=True)
class TimerHandle:
    deadline: float
    seq: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class EventLoop:
    """``select.epoll`` itself rather than ``selectors``: each child adds three descriptors (its pidfd, its stdout
    and stderr pipes) at its start and removes them at its exit, and the selectors layer (a key object, a failed
    lookup, a mapping check per change) made that 5.8 us a descriptor against 2.6 us here."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._epoll = select.epoll()
        self._fds: dict[int, list[Callable[[], None] | None]] = {}  # fd -> [reader, writer]
        self._timers: list[TimerHandle] = []
        self._compact_at = MIN_COMPACT  # heap size at which cancelled timers are swept out
        self._seq = itertools.count()
        self._signal_handlers: dict[int, Callable[[int], None]] = {}
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._old_handlers: dict[int, object] = {}
        self._soon: list[Callable[[], None]] = []
        self.stopped = False
        self.turns = TurnStats()
        self.after_turn: Callable[[], None] | None = None  # at the end of each turn that woke up (the dashboard's)

    # ---- descriptors ----

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self._watch(fd, 0, callback)

    def remove_reader(self, fd: int) -> None:
        self._watch(fd, 0, None)

    def add_writer(self, fd: int, callback: Callable[[], None]) -> None:
        self._watch(fd, 1, callback)

    def remove_writer(self, fd: int) -> None:
        self._watch(fd, 1, None)

    def _watch(self, fd: int, slot: int, callback: Callable[[], None] | None) -> None:
        """Set or clear one callback of ``fd``; epoll is told only when the set of wanted events changes.

        The callbacks list of a descriptor is changed in place, so an event already collected in this turn for
        a callback removed meanwhile finds None and is skipped.
        """
        callbacks = self._fds.get(fd)
        if callbacks is None:
            if callback is None:
                return
            callbacks = [None, None]
            callbacks[slot] = callback
            self._epoll.register(fd, _mask(callbacks))
            self._fds[fd] = callbacks
            return
        before = _mask(callbacks)
        callbacks[slot] = callback
        after = _mask(callbacks)
        if after == before:
            return
        if after:
            self._epoll.modify(fd, after)
            return
        del self._fds[fd]
        with contextlib.suppress(OSError):  # already closed: the kernel dropped it from the epoll set itself
            self._epoll.unregister(fd)

    # ---- timers ----

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        handle = TimerHandle(self.clock() + max(0.0, delay), next(self._seq), callback)
        if len(self._timers) >= self._compact_at:
            # A cancelled timer leaves the heap only when it reaches the top: a watchdog re-armed at every ping
            # would pile them up. Sweeping when the heap has doubled keeps it under twice the live timers.
            self._timers = [t for t in self._timers if not t.cancelled]
            heapq.heapify(self._timers)
            self._compact_at = max(MIN_COMPACT, 2 * len(self._timers))
        heapq.heappush(self._timers, handle)
        return handle

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` at the end of this loop turn, after every ready descriptor has been handled.

        This is where group commit happens: all work of one turn is collected, then flushed once.
        """
        self._soon.append(callback)

    # ---- signals ----

    def add_signal_handler(self, signum: int, callback: Callable[[int], None]) -> None:
        if self._wake_r is None:
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
            self.add_reader(self._wake_r.fileno(), self._read_signals)
        self._signal_handlers[signum] = callback
        self._old_handlers[signum] = signal.signal(signum, _noop_handler)

    def signals_waiting(self) -> bool:
        """Whether a signal has been heard that its handler has not seen yet (the wake-up socket holds its byte)."""
        return self._wake_r is not None and bool(select.select([self._wake_r], [], [], 0)[0])

    def _read_signals(self) -> None:
        assert self._wake_r is not None
        try:
            data = self._wake_r.recv(4096)
        except BlockingIOError:
            return
        for signum in data:
            handler = self._signal_handlers.get(signum)
            if handler is not None:
                handler(signum)

    # ---- running ----

    def run(self) -> None:
        while not self.stopped:
            self.run_once()

    def run_once(self) -> None:
        timeout = 0 if self._soon else self._timeout()
        ready = [(self._fds.get(fd), events) for fd, events in self._epoll.poll(timeout, max(1, len(self._fds)))]
        began = self.clock()
        for callbacks, events in ready:
            if self.stopped:
                return
            if callbacks is None:
                continue
            # An error or hang-up wakes both directions, as selectors did: the callback finds out by reading.
            if events & ~WRITE and callbacks[0] is not None:
                callbacks[0]()
            if events & ~READ and callbacks[1] is not None:
                callbacks[1]()
        self._fire_due_timers()
        self._run_soon()
        if self.after_turn is not None:
            self.after_turn()
        self.turns.record(self.clock() - began)

    def _run_soon(self) -> None:
        rounds = 0
        while self._soon and rounds < 8 and not self.stopped:  # callbacks may add more; bounded per turn
            batch, self._soon = self._soon, []
            for callback in batch:
                callback()
            rounds += 1

    def stop(self) -> None:
        self.stopped = True

    def close(self) -> None:
        for signum, old in self._old_handlers.items():
            signal.signal(signum, old)  # type: ignore[arg-type]
        if self._wake_r is not None:
            signal.set_wakeup_fd(-1)
            self._wake_r.close()
            assert self._wake_w is not None
            self._wake_w.close()
            self._wake_r = self._wake_w = None
        self._epoll.close()
        self._fds.clear()

    def _timeout(self) -> float | None:
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        if not self._timers:
            return None
        # epoll cannot wait for years: a far timer costs one harmless wake-up a day instead of an OverflowError.
        return min(MAX_WAIT, max(0.0, self._timers[0].deadline - self.clock()))

    def _fire_due_timers(self) -> None:
        now = self.clock()
        while self._timers and self._timers[0].deadline <= now:
            handle = heapq.heappop(self._timers)
            if not handle.cancelled:
                handle.callback()


def _mask(callbacks: list[Callable[[], None] | None]) -> int:
    return (READ if callbacks[0] is not None else 0) | (WRITE if callbacks[1] is not None else 0)


def _noop_handler(signum: int, frame: object) -> None:
    """The wake-up fd carries the signal; the handler must exist but has nothing to do."""
