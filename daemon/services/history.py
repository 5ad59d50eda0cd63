"""Restart history: why each child went down and what its supervisor did about it, kept across daemon restarts.

    EventStream ──events of a batch──> RestartTracker (pure) ──records──> HistoryStore (LMDB, <state_dir>/history)
                                          │                                  └──> ``foundationctl history [NAME]``
                                          └──> restarts by (child, reason) ──> metrics

A record: ``{"ts", "child", "supervisor", "pid", "exit", "status", "signal", "reason", "outcome", "restarts",
"delay"}``. ``reason`` is why the child went down: ``crash`` (it exited or was killed by someone else, or failed to
start), ``watchdog``, ``heartbeat``, ``max_memory`` (the daemon killed it for that), ``intensity`` (a supervisor
whose children restarted too often failed, and its parent restarted it) or ``strategy`` (a sibling's exit
restarted it: one_for_all, rest_for_one). ``outcome``: ``restarted``; ``parked`` (``on_intensity = "park"``);
``escalated`` (that restart was one too many: its supervisor failed). An exit that is not restarted by its policy
(temporary, transient after a normal exit) or a stop that was asked for is not a restart, and not recorded.

The store keeps the last ``KEEP`` records (the oldest go), one LMDB write transaction per batch of events. A
restart storm is bounded by restart intensity, so this writes a few records a second at most.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb
import orjson

from daemon.services.events import Event

KEEP = 10_000
_KEY = struct.Struct(">Q")


class RestartTracker:
    """Pairs a child's unexpected exit with the decision about it that follows (same batch or a later one)."""

    def __init__(self) -> None:
        self._down: dict[str, Event] = {}  # name -> why it went down, until its supervisor decides
        self.restarts: dict[tuple[str, str], int] = {}  # (child, reason) -> restarts since the daemon started

    def feed(self, events: list[Event]) -> list[Event]:
        """The records these events complete, oldest first."""
        out: list[Event] = []
        for event in events:
            record = self._one(event)
            if record is not None:
                out.append(record)
                if record["outcome"] == "restarted":
                    key = (record["child"], record["reason"])
                    self.restarts[key] = self.restarts.get(key, 0) + 1
        return out

    def _one(self, event: Event) -> Event | None:
        kind = event.get("type")
        if kind == "child_exited":
            if not event.get("expected"):
                self._down[event["name"]] = event
            else:
                self._down.pop(event["name"], None)
        elif kind == "start_failed":
            self._down.setdefault(event["name"], {**event, "reason": f"failed to start: {event.get('reason')}"})
        elif kind == "intensity_exceeded":
            self._down[event["supervisor"]] = {**event, "cause": "intensity",
                                               "reason": f"more than {event['intensity']} restarts in "
                                                         f"{event['period']:g}s (last: {event['last']})"}
            return self._record(event["ts"], event["last"], event["supervisor"], "escalated", self._down.pop(
                event["last"], None))
        elif kind == "supervisor_failed":
            self._down.setdefault(event["supervisor"], {**event, "name": event["supervisor"]})
        elif kind == "child_parked":
            return self._record(event["ts"], event["name"], event["supervisor"], "parked",
                                self._down.pop(event["name"], None))
        elif kind == "child_restarted":
            record = self._record(event["ts"], event["name"], event["supervisor"], "restarted",
                                  self._down.pop(event["name"], None))
            record.update(restarts=event.get("restarts"), delay=event.get("delay"))
            return record
        return None

    @staticmethod
    def _record(ts: float, child: str, supervisor: str, outcome: str, down: Event | None) -> Event:
        if down is None:
            return {"ts": ts, "child": child, "supervisor": supervisor, "reason": "strategy", "outcome": outcome}
        return {"ts": ts, "child": child, "supervisor": supervisor, "pid": down.get("pid"),
                "exit": down.get("reason"), "status": down.get("status"), "signal": down.get("signal"),
                "reason": down.get("cause") or "crash", "outcome": outcome}


class HistoryStore:
    """The records in LMDB under increasing 8-byte keys; opened by the daemon, after its last fork of nothing."""

    def __init__(self, path: Path, keep: int = KEEP, map_size: int = 64 << 20) -> None:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._keep = keep
        # sync=True with metasync=False: each batch is on disk when it returns; a system crash may lose the last
        # one, never the file's integrity (py-lmdb docs).
        self._env = lmdb.open(str(path), map_size=map_size, subdir=True, sync=True, metasync=False, max_readers=8,
                               max_dbs=0)
        self._env.reader_check()
        with self._env.begin() as txn:
            cursor = txn.cursor()
            self._next = _KEY.unpack(cursor.key())[0] + 1 if cursor.last() else 1
            self._count = txn.stat()["entries"]

    def close(self) -> None:
        self._env.close()

    def append(self, records: list[Event]) -> None:
        if not records:
            return
        with self._env.begin(write=True) as txn:
            for record in records:
                txn.put(_KEY.pack(self._next), orjson.dumps(record))
                self._next += 1
                self._count += 1
            cursor = txn.cursor()
            while self._count > self._keep and cursor.first():
                cursor.delete()
                self._count -= 1

    def last(self, count: int, match: Callable[[Event], bool] | None = None) -> list[Event]:
        """The last ``count`` records (that ``match``), oldest first."""
        out: list[Event] = []
        if count <= 0:
            return out
        with self._env.begin() as txn:
            cursor = txn.cursor()
            if not cursor.last():
                return out
            while True:
                record: dict[str, Any] = orjson.loads(cursor.value())
                if match is None or match(record):
                    out.append(record)
                    if len(out) == count:
                        break
                if not cursor.prev():
                    break
        out.reverse()
        return out


def history_path(state_dir: Path) -> Path:
    return state_dir / "history"
