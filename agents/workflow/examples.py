"""Small functions for ``python`` steps in the examples and tests."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from agents.workflow.errors import BusinessError, InfrastructureError


def add(a: int, b: int) -> int:
    return a + b


def noop() -> None:
    return None


def flaky(counter: str, succeed_on: int) -> str:
    """Fails with an infrastructure error until its ``succeed_on``-th call (counted in the file ``counter``)."""
    path = Path(counter)
    calls = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(calls))
    if calls < succeed_on:
        raise InfrastructureError(f"call {calls}: the dependency is down", code="dependency_down")
    return f"ok on call {calls}"


def refuse(reason: str) -> None:
    """Fails with a business error: never retried."""
    raise BusinessError(reason, code="refused")


def append_and_wait(out: str, line: str, gate: str = "") -> str:
    """Append ``line`` to the file ``out``; then, with ``gate``, wait until that file exists (tests kill meanwhile)."""
    with open(out, "a") as f:
        f.write(line + "\n")
    while gate and not Path(gate).exists():
        time.sleep(0.01)
    return line


def die(count: str) -> None:
    """Counts its call in the file ``count``, then SIGKILLs the process running it (a step that crashes its host)."""
    path = Path(count)
    path.write_text(str(int(path.read_text()) + 1 if path.exists() else 1))
    os.kill(os.getpid(), signal.SIGKILL)
