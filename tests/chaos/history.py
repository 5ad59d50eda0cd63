"""A Jepsen-style history: every operation a workload makes, as it happens, one JSON object a line.

    workload threads ──invoke──> History ──> history.jsonl ──> checker.check() (offline, pure)
                      <─ok/fail/info─┘

An operation is an ``invoke`` followed by one completion from the same ``process`` (a workload thread; one
operation at a time per process): ``ok`` (it happened), ``fail`` (it certainly did not) or ``info`` (unknown: the
connection broke or timed out after the request left; it may or may not have happened, now or later). A process
that never completes its last operation leaves it unknown too. The workload knows nothing of the checker, and the
checker nothing of Foundation: only these records.

Operations (``f``) and their values:

- ``send``: ``{"to": AGENT, "ch": SENDER, "n": N, "producer": bool}``; the completion adds ``id``/``duplicate``
  (ok) or ``error`` (fail/info). A channel is (``ch``, ``to``); ``n`` numbers its messages 1, 2, 3...
- ``call``: ``{"to": AGENT}``; ok's value is the reply, ``{"last": {SENDER: N}}``: per sender, the highest ``n``
  the agent had applied when it answered.
- ``read``: the final read of an agent's persisted state after the faults healed; ok's value ``{"to": AGENT,
  "applied": [[SENDER, N], ...]}`` is every applied message id in the order applied (the effects).
- ``wf-run``: ``{"id": WF, "steps": [STEP, ...]}``; ``wf-final``: ok's value ``{"id", "state", "steps": {STEP:
  state}}`` (or ``{"id", "missing": true}``); ``wf-effects``: ok's value ``{"counts": {"WF/STEP": runs}}``, how
  many times each command step's effect happened.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

INVOKE, OK, FAIL, INFO = "invoke", "ok", "fail", "info"


class History:
    """Thread-safe, append-only; written through to ``path`` (if given) so that a crash of the runner keeps it."""

    def __init__(self, path: Path | None = None) -> None:
        self._lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self._file = open(path, "ab") if path is not None else None  # noqa: SIM115 (closed by close())

    def _add(self, process: str, kind: str, f: str, value: Any) -> dict[str, Any]:
        with self._lock:
            event = {"i": len(self.events), "t": round(time.monotonic(), 6), "process": process, "type": kind,
                     "f": f, "value": value}
            self.events.append(event)
            if self._file is not None:
                self._file.write(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
                self._file.flush()
            return event

    def invoke(self, process: str, f: str, value: Any) -> None:
        self._add(process, INVOKE, f, value)

    def ok(self, process: str, f: str, value: Any) -> None:
        self._add(process, OK, f, value)

    def fail(self, process: str, f: str, value: Any) -> None:
        self._add(process, FAIL, f, value)

    def info(self, process: str, f: str, value: Any) -> None:
        self._add(process, INFO, f, value)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def load(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def dump(events: Iterable[dict[str, Any]], path: Path) -> None:
    path.write_bytes(b"".join(orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE) for e in events))
