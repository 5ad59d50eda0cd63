"""Running a ``python`` step: where the function is found, its deadline, and its outcome in the one error shape.
Shared by the task agents and by a workflow's own process (``args.inline``)."""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from agents.workflow.errors import classify, error


class StepTimeout(TimeoutError):
    pass


def run_python(args: dict[str, Any], timeout: float, label: str, busy: Callable[[float], None] | None = None
               ) -> dict[str, Any]:
    """``{"ok": value}`` or ``{"error": {...}}``; the step's traceback goes to stderr (the agent's log). ``busy``: the
    agent's ``busy``, told the step's timeout before it runs (and 0 after), so its liveness check waits for it."""
    if busy is not None:
        busy(timeout + 5.0)
    try:
        return _run(args, timeout, label)
    finally:
        if busy is not None:
            busy(0)


class Quiet:
    """Tells the agent's liveness check how long it will be silent, once for a run of steps rather than twice a step
    (each announcement is a frame the daemon wakes up for): a window of the step's timeout plus a margin, announced
    again only when a step's timeout would outlast what is left of it, and closed (``busy(0)``) at the end."""

    MARGIN = 60.0  # seconds a window outlasts the step that opened it: the next steps fit in it

    def __init__(self, busy: Callable[[float], None]) -> None:
        self._busy = busy
        self._until = 0.0

    def cover(self, timeout: float) -> None:
        now = time.monotonic()
        if now + timeout + 5.0 > self._until:
            self._busy(timeout + 5.0 + self.MARGIN)
            self._until = now + timeout + 5.0 + self.MARGIN

    def end(self) -> None:
        if self._until:
            self._busy(0)
            self._until = 0.0


def _run(args: dict[str, Any], timeout: float, label: str) -> dict[str, Any]:
    try:
        with deadline(timeout):
            value = function(args["function"])(**args.get("kwargs", {}))
        orjson.dumps(value)
    except StepTimeout:
        return {"error": error("timeout", "timeout", f"step {label} ran past {timeout}s")}
    except Exception as exc:
        print(f"step {label} failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        return {"error": classify(exc)}
    return {"ok": value}


def function(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """SIGALRM at the step's timeout, raised as StepTimeout in the step (Python code is interrupted between
    bytecodes; a C call that never returns is ended by the agent's liveness check, not here)."""
    def expire(signum: int, frame: object) -> None:
        raise StepTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
