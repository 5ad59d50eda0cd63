"""The event loop's descriptor bookkeeping on epoll: what a callback may change for the rest of its turn."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from daemon.shell.loop import EventLoop


@pytest.fixture
def loop() -> Iterator[EventLoop]:
    loop = EventLoop()
    yield loop
    loop.close()


def readable_pipe() -> tuple[int, int]:
    r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    os.write(w, b"x")
    return r, w


def test_a_reader_removed_earlier_in_the_same_turn_is_not_called(loop: EventLoop) -> None:
    """A child's exit handled first may close another descriptor that is ready in the same epoll batch."""
    (a, wa), (b, wb) = readable_pipe(), readable_pipe()
    calls: list[int] = []

    def first(me: int, other: int) -> None:
        calls.append(me)
        loop.remove_reader(other)

    loop.add_reader(a, lambda: first(a, b))
    loop.add_reader(b, lambda: first(b, a))
    loop.run_once()
    assert len(calls) == 1
    for fd in (a, wa, b, wb):
        os.close(fd)


def test_removing_the_writer_keeps_the_reader(loop: EventLoop) -> None:
    r, w = readable_pipe()
    seen: list[str] = []
    loop.add_reader(r, lambda: seen.append("read"))
    loop.add_writer(r, lambda: seen.append("write"))  # a pipe's read end never polls writable: only the mask matters
    loop.remove_writer(r)
    loop.run_once()
    assert seen == ["read"]
    loop.remove_reader(r)
    loop.call_soon(lambda: seen.append("turn"))  # nothing registered now: the turn must not wait
    loop.run_once()
    assert seen == ["read", "turn"]
    os.close(r)
    os.close(w)


def test_removing_a_descriptor_closed_already_is_harmless(loop: EventLoop) -> None:
    r, w = readable_pipe()
    loop.add_reader(r, lambda: None)
    os.close(r)
    loop.remove_reader(r)  # the kernel dropped it from the epoll set at close
    loop.add_reader(w, lambda: None)  # the number may be reused by the next descriptor: registering works again
    loop.remove_reader(w)
    os.close(w)


def test_a_descriptor_reused_in_the_same_turn_does_not_get_the_old_event(loop: EventLoop) -> None:
    """Closed and its number reused within one batch: the old event must not reach the new callback."""
    (a, wa), (b, wb) = readable_pipe(), readable_pipe()
    calls: list[str] = []
    replaced: list[int] = []

    def close_and_reuse(other: int) -> None:
        calls.append("first")
        loop.remove_reader(other)
        os.close(other)
        fd, spare = os.pipe2(os.O_CLOEXEC)  # likely takes `other`'s number; empty, so never readable
        replaced.extend((fd, spare))
        loop.add_reader(fd, lambda: calls.append("new"))

    loop.add_reader(a, lambda: close_and_reuse(b))
    loop.add_reader(b, lambda: close_and_reuse(a))
    loop.run_once()
    assert calls == ["first"]
    for fd in (wa, wb, *replaced):
        os.close(fd)
    for fd in (a, b):
        if fd not in replaced:
            os.close(fd)


def test_timers_cancelled_and_set_again_do_not_pile_up() -> None:
    """What a watchdog re-armed at every ping does: 10,000 cancelled timers far in the future, one live."""
    loop = EventLoop()
    try:
        live = [loop.call_later(1000, lambda: None) for _ in range(10)]
        handle = loop.call_later(500, lambda: None)
        for _ in range(10_000):
            handle.cancel()
            handle = loop.call_later(500, lambda: None)
        assert len(loop._timers) < 2 * (len(live) + 1) + 64
        fired: list[int] = []
        soon = loop.call_later(0, lambda: fired.append(1))
        loop.run_once()
        assert fired == [1]
        assert not soon.cancelled
        assert all(not t.cancelled for t in live), "live timers survive the sweeps"
        assert sum(not t.cancelled for t in loop._timers) == len(live) + 1
    finally:
        loop.close()
