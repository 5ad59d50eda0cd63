"""The daemon's task supervisor for workflow ``command`` steps: each one a temporary child of ``tasks``.

    task agent ──task start {key, notify, command, timeout}──> Tasks ──record (fsync)──> attach cmd-HASH
                                                               │                      (own group, ephemeral)
          timeout ──> SIGKILL to its whole group               │ exit
                                                               v
                   record the result (fsync) ──> cast {"step_done"} to the workflow (durable, through the broker)

The record is written before the command starts and keyed by ``workflow/step/attempt``, so a task agent that hands
the same step over twice (it died before it committed) starts nothing new. A command's exit is recorded by the daemon
whoever asked has died since. If the daemon itself dies, the command dies with it (the guardian kills its group): at
the next boot a record still ``running`` from an earlier boot becomes a ``lost`` outcome, which the workflow turns
into a retry (idempotent steps) or an ambiguous step.

Result of a command: its stdout parsed as JSON, else its last stdout line as a string (what it says on stderr stays
out of it; a failure is named by its last stderr line, else its last stdout line); exit status 0 is success. A non-zero
status fails the step as a business error, except 75 (EX_TEMPFAIL), which is an infrastructure error (retried);
killed by a signal it did not get from us: infrastructure; past its timeout: timeout.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Protocol

import lmdb
import orjson

from daemon.config import ConfigError, child_spec_from_dict
from daemon.core.protocol import Action, Exited
from daemon.core.spec import WorkerSpec
from daemon.core.tree import SupervisionTree
from daemon.shell.loop import TimerHandle
from ipc.errors import ErrorCode, FoundationError

log = logging.getLogger("foundationd.tasks")

SUPERVISOR = "tasks"
PREFIX = "cmd-"
EX_TEMPFAIL = 75
KEEP_DONE = 86400.0  # seconds a finished record is kept (a late duplicate hand-over finds it)
RESULT_LINES = 200  # output lines a result is read from
RETRY_NOTIFY = 1.0


class Context(Protocol):
    tree: SupervisionTree

    def apply(self, actions: list[Action]) -> None: ...


class Broker(Protocol):
    def send(self, to: str, body: Any, respond: Callable[[Any, FoundationError | None], None]) -> None: ...


class Tasks:
    def __init__(self, state_dir: Path, ctx: Context, output: Callable[[str, int, Collection[str] | None],
                                                                   list[tuple[float, str, str]]],
                 call_later: Callable[[float, Callable[[], None]], TimerHandle],
                 kill: Callable[[int, int], None]) -> None:
        path = state_dir / "tasks"
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._env = lmdb.open(str(path), map_size=64 << 20, subdir=True, sync=True, metasync=True, max_readers=8)
        self._env.reader_check()
        self._ctx, self._output, self._call_later, self._kill = ctx, output, call_later, kill
        self.broker: Broker | None = None
        self._boot = os.urandom(8).hex()
        self._running: dict[str, str] = {}  # child name -> key
        self._specs: dict[str, dict[str, Any]] = {}  # child name -> its spec as plain data (an upgrade hands it over)
        self._timers: dict[str, TimerHandle] = {}
        self._ended: dict[str, str] = {}  # child name -> why we killed it ("timeout" | "cancelled")
        self.on_step: Callable[..., None] = lambda phase, **fields: None  # workflow_step events (observability)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._env.close()

    # ---- requests (the ``task`` verb) ----

    def start(self, key: str, *, notify: str, step: str, attempt: int, spec: dict[str, Any], timeout: float
              ) -> dict[str, Any]:
        record = self._get(key)
        if record is not None:
            if record["state"] == "done" and not record.get("notified"):
                self._notify(key, record)
            return {"key": key, "state": record["state"], "duplicate": True}
        name = child_name(key)
        raw = {**spec, "name": name, "restart": "temporary", "shutdown": "brutal_kill"}
        try:
            worker = child_spec_from_dict(raw, key="command step")
        except ConfigError as exc:
            raise FoundationError(ErrorCode.INVALID_SPEC, str(exc)) from None
        assert isinstance(worker, WorkerSpec)
        record = {"notify": notify, "step": step, "attempt": attempt, "state": "running", "boot": self._boot,
                  "name": name, "at": time.time()}
        self._put(key, record)
        self._running[name] = key
        self._specs[name] = raw
        self._ctx.apply(self._ctx.tree.attach(SUPERVISOR, worker, synchronous=True, ephemeral=True))
        node = self._ctx.tree.find_quiet(name)
        if node is None or node.rejected is not None:
            why = node.rejected if node is not None else f"{name} could not start"
            self._finish(name, {"error": _error("spawn_failed", "infrastructure", why or "spawn failed")})
            return {"key": key, "state": "done"}
        self._timers[name] = self._call_later(timeout, lambda: self._expire(name, "timeout"))
        self.on_step("started", **_about(key, record), pid=getattr(node, "pid", None))
        return {"key": key, "state": "running", "name": name}

    def kill(self, key: str) -> dict[str, Any]:
        record = self._get(key)
        if record is None:
            raise FoundationError(ErrorCode.NO_SUCH_CHILD, f"no task {key!r}")
        if record["state"] == "running" and record["name"] in self._running:
            self._expire(record["name"], "cancelled")
        return {"key": key, "state": record["state"]}

    def status(self, key: str) -> dict[str, Any]:
        record = self._get(key)
        if record is None:
            raise FoundationError(ErrorCode.NO_SUCH_CHILD, f"no task {key!r}")
        return {"key": key, **record}

    # ---- the daemon's events ----

    def owns(self, name: str) -> bool:
        return name in self._running

    def exited(self, event: Exited) -> None:
        """A command child ended (its output is all in its ring by now): record the result, tell the workflow."""
        why = self._ended.pop(event.name, None)
        if why == "timeout":
            result: dict[str, Any] = {"error": _error("timeout", "timeout", "killed at its timeout "
                                                      "(with its process group)")}
        elif why == "cancelled":
            result = {"error": _error("cancelled", "business", "cancelled")}
        elif event.status == 0:
            result = {"ok": parse_output(self._lines(event.name))}
        elif event.status == EX_TEMPFAIL:
            result = {"error": _error("exit_status", "infrastructure", self._failure(event), {"status": 75})}
        elif event.signal is not None:
            result = {"error": _error("killed", "infrastructure", self._failure(event), {"signal": event.signal})}
        else:
            result = {"error": _error("exit_status", "business", self._failure(event), {"status": event.status})}
        self._finish(event.name, result)

    def recover(self) -> None:
        """At boot: commands that were running when the daemon died are lost; results not yet told are told."""
        now = time.time()
        stale, lost, untold = [], [], []
        with self._env.begin() as txn:
            for raw_key, raw in txn.cursor():
                key, record = bytes(raw_key).decode(), orjson.loads(raw)
                if record["state"] == "running" and record["boot"] != self._boot:
                    lost.append((key, record))
                elif record["state"] == "done" and not record.get("notified"):
                    untold.append((key, record))
                elif record["state"] == "done" and now - record.get("finished", now) > KEEP_DONE:
                    stale.append(key)
        for key, record in lost:
            record.update(state="done", finished=now,
                          result={"lost": "the daemon died while the command ran (it was killed with it)"})
            self._put(key, record)
            untold.append((key, record))
            self.on_step("ended", **_about(key, record), outcome="lost")
        self._delete(stale)
        for key, record in untold:
            self._notify(key, record)
        if lost:
            log.warning("%d workflow command(s) were running when the daemon died: reported lost", len(lost))

    # ---- an in-place upgrade (daemon/services/upgrade.py) ----

    def handed(self, name: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """A running command step's spec and state (record key, timeout deadline), for the next image; else None."""
        key, spec = self._running.get(name), self._specs.get(name)
        if key is None or spec is None:
            return None
        timer = self._timers.get(name)
        return spec, {"key": key, "deadline": timer.deadline if timer is not None else None,
                      "ended": self._ended.get(name)}

    @property
    def boot(self) -> str:
        """This boot's id in the records (a record ``running`` under another is a command lost with its daemon)."""
        return self._boot

    def adopt_boot(self, boot: str) -> None:
        """The previous image's records are this image's (before ``recover``): its running commands are handed over,
        not lost."""
        self._boot = boot

    def adopt(self, spec: dict[str, Any], task: dict[str, Any]) -> None:
        """A running command step handed over: attached again (the upgrade answers its start with the running
        process), its timeout still where it was."""
        worker = child_spec_from_dict(spec, key="command step")
        name = worker.name
        self._running[name], self._specs[name] = task["key"], spec
        if task.get("ended"):
            self._ended[name] = task["ended"]
        self._ctx.apply(self._ctx.tree.attach(SUPERVISOR, worker, synchronous=True, ephemeral=True))
        if task.get("deadline") is not None:
            left = float(task["deadline"]) - time.monotonic()
            self._timers[name] = self._call_later(max(0.0, left), lambda: self._expire(name, "timeout"))

    # ---- internals ----

    def _expire(self, name: str, why: str) -> None:
        node = self._ctx.tree.find_quiet(name)
        pid = getattr(node, "pid", None)
        if name in self._running and pid is not None:
            self._ended[name] = why
            self._kill(pid, signal.SIGKILL)  # the whole group: the leader and everything it started

    def _finish(self, name: str, result: dict[str, Any]) -> None:
        key = self._running.pop(name, None)
        self._specs.pop(name, None)
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        record = self._get(key) if key is not None else None
        if key is None or record is None:
            return
        record.update(state="done", finished=time.time(), result=result)
        self._put(key, record)
        self.on_step("ended", **_about(key, record), outcome="ok" if "ok" in result else result["error"]["code"],
                     seconds=round(record["finished"] - record["at"], 3))
        self._notify(key, record)

    def _notify(self, key: str, record: dict[str, Any], tries: int = 0) -> None:
        if self.broker is None:
            return
        body = {"step_done": {"step": record["step"], "attempt": record["attempt"], "result": record["result"],
                              "key": key}}  # (a workflow host, wfhost-K, routes by the key's workflow id)

        def respond(receipt: Any, err: FoundationError | None) -> None:
            if err is None:
                record["notified"] = True
                self._put(key, record)
            elif tries < 60 and err.code in (ErrorCode.MAILBOX_FULL, ErrorCode.NO_SUCH_AGENT, ErrorCode.INTERNAL):
                self._call_later(RETRY_NOTIFY, lambda: self._notify(key, record, tries + 1))
            else:
                log.warning("the result of task %s could not be told to %s: %s", key, record["notify"], err.message)

        self.broker.send(record["notify"], body, respond)

    def _lines(self, name: str, streams: tuple[str, ...] = ("stdout",)) -> list[str]:
        """The command's own lines (not the daemon's start and exit markers) from ``streams``."""
        return [line for _, _, line in self._output(name, RESULT_LINES, streams)]

    def _failure(self, event: Exited) -> str:
        lines = self._lines(event.name, ("stderr",)) or self._lines(event.name)  # where it says why, if it does
        return f"{event.describe()}" + (f": {lines[-1]}" if lines else "")

    def _get(self, key: str) -> dict[str, Any] | None:
        with self._env.begin() as txn:
            raw = txn.get(key.encode())
        return orjson.loads(raw) if raw is not None else None

    def _put(self, key: str, record: dict[str, Any]) -> None:
        with self._env.begin(write=True) as txn:
            txn.put(key.encode(), orjson.dumps(record))

    def _delete(self, keys: list[str]) -> None:
        if keys:
            with self._env.begin(write=True) as txn:
                for key in keys:
                    txn.delete(key.encode())


def _about(key: str, record: dict[str, Any]) -> dict[str, Any]:
    """A command step's fields in a ``workflow_step`` event (the workflow's id is the key's first part, whoever is
    told: its own process or a workflow host)."""
    return {"workflow": key.split("/", maxsplit=1)[0], "step": record["step"],
            "attempt": record["attempt"], "kind": "command", "name": record["name"]}


def child_name(key: str) -> str:
    return PREFIX + hashlib.blake2s(key.encode(), digest_size=6).hexdigest()


def parse_output(lines: list[str]) -> Any:
    """A command's result: all its output as one JSON value, else its last non-empty line as a string."""
    text = "\n".join(lines).strip()
    if not text:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return next(line for line in reversed(lines) if line.strip()).strip()


def _error(code: str, category: str, message: str, context: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"code": code, "category": category, "message": message, "context": context or {},
            "retryable": category in ("infrastructure", "timeout", "unavailable")}
