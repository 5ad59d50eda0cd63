"""The daemon's side of workflows (DESIGN 3.6): the ``tasks`` supervisor's command steps, durable dynamic children,
and the reading of workflows' records (``workflow status``, ``results``, ``list``, ``wait``). Everything else of
workflows lives in agents (coordinator, workflow processes, task agents): the daemon owns what must outlive them
(the commands, the list of workflow processes to bring back after a crash) and answers reads while they restart.

``wait`` is told when the workflow's process finishes a message (the broker's ``on_done``: its record is committed
by then) or leaves the tree; no waiter polls.

``run`` without an id goes straight to a workflow host (``wfhost-K``, agents/workflow/host.py) when the tree has
some: one durable cast ``{"wf": ID, "start": ...}`` to it, answered once accepted (on disk); no coordinator, no
process started. A waiter on a hosted workflow is told when its host finishes a message.
"""

from __future__ import annotations

import secrets
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from daemon.config import child_spec_from_dict
from daemon.core.protocol import Exited
from daemon.services.durable_children import DurableChildren
from daemon.services.tasks import Tasks
from daemon.shell.loop import TimerHandle
from ipc.errors import ErrorCode, FoundationError
from ipc.state_store import StateError, shared_store_path
from ipc.workflow_def import parse, tasks
from ipc.workflow_record import TERMINAL, idle, summary

if TYPE_CHECKING:
    from daemon.app import App

PREFIX = "workflow-"
HOST_PREFIX = "wfhost-"  # (agents/workflow/host.py's)
START_VARIABLE = "FOUNDATION_WORKFLOW_START"  # (agents/workflow/process.py's: daemon/ does not import agents/)
Reply = Callable[[Any], Any]


class WorkflowSide:
    def __init__(self, app: App, state_dir: Path) -> None:
        self._app = app
        self._state_dir = state_dir
        self.durable = DurableChildren(state_dir)
        self.tasks = Tasks(state_dir, app, app.logs.tail, app.loop.call_later, app.shell.signal)
        self._waits: dict[str, list[tuple[Reply, TimerHandle]]] = {}
        self._hosted_waits: dict[str, set[str]] = {}  # host -> names of the hosted workflows someone waits for

    def booted(self) -> None:
        """After the tree's boot: the durable children come back, then commands lost with the last daemon are told."""
        broker = self._app.broker
        assert broker is not None
        self.tasks.broker = broker
        broker.on_done = self._done
        self.durable.restore(self._attach_again)
        self.tasks.recover()

    def exited(self, event: Exited) -> None:
        if self.tasks.owns(event.name):
            self.tasks.exited(event)

    # ---- running on a host ----

    def hosts(self) -> list[str]:
        """The workflow hosts in the tree (``wfhost-1`` ... ``wfhost-N``)."""
        out: list[str] = []
        while self._app.tree.find_quiet(f"{HOST_PREFIX}{len(out) + 1}") is not None:
            out.append(f"{HOST_PREFIX}{len(out) + 1}")
        return out

    def host_of(self, wf_id: str) -> str | None:
        hosts = self.hosts()
        return hosts[zlib.crc32(wf_id.encode()) % len(hosts)] if hosts else None

    def run(self, definition: Any, reply: Reply, wait: float | None = None) -> None:
        """A new workflow on a host: ``{"id"}`` once its start is on disk (a durable cast to the host), or with
        ``wait`` (seconds) the summary (and ``"id"``) once it has finished, as ``wait`` answers, in the same request.
        With ``wait`` the start is a call: the host answers once its record is committed, after the inline steps it
        could run, so no message waits in the daemon's outbox (two fsyncs less: its accept and its deletion). Its
        promise to the client is the same: an answer says where the run is; no answer (a crash on the way) leaves
        the run unknown to it either way; a failure names the id, whose status tells whether it began."""
        broker = self._app.broker
        assert broker is not None
        wf_id = secrets.token_hex(5)
        while self._read(PREFIX + wf_id) is not None:  # (40 random bits: never, but an id is never given twice)
            wf_id = secrets.token_hex(5)
        host = self.host_of(wf_id)
        if host is None:
            raise FoundationError(ErrorCode.UNAVAILABLE, "no workflow host in the tree ([workflows] hosts = 0)")

        def accepted(receipt: Any, err: FoundationError | None) -> None:
            if err is not None:
                reply(err)
                return
            self._app.obs.workflow_step("run", workflow=wf_id)  # (an event: workflow_step, phase run)
            if wait is None:
                reply({"id": wf_id})
            else:  # once the broker has queued the start (after this answer): then its mailbox shows it
                self._app.loop.call_soon(lambda: self._wait_run(wf_id, reply, wait))

        start = {"wf": wf_id, "start": {"id": wf_id, "definition": definition}}
        if wait is None:
            broker.send(host, start, accepted)
            return

        def answered(summary: Any, err: FoundationError | None) -> None:
            if err is not None and err.code == ErrorCode.TIMEOUT:  # its steps outlast the wait: as wait answers
                try:
                    reply({**self.summary(wf_id), "pending": True, "id": wf_id})
                except FoundationError as exc:
                    reply(exc)
                return
            if err is not None:
                err.context = {**(err.context or {}), "workflow": wf_id}
                reply(err)
                return
            self._app.obs.workflow_step("run", workflow=wf_id)
            if isinstance(summary, dict) and summary.get("state") in ("completed", "failed", "cancelled", "paused",
                                                                          "waiting"):
                reply({**summary, "id": wf_id})
            else:  # steps still run (a task agent's, a retry's delay): wait as ``wait`` does
                self._wait_run(wf_id, reply, wait)

        broker.call(host, start, wait, answered)

    def _wait_run(self, wf_id: str, reply: Reply, timeout: float) -> None:
        try:
            self.wait(wf_id, lambda summary: reply(summary if isinstance(summary, Exception)
                                                   else {**summary, "id": wf_id}), timeout)
        except FoundationError as exc:
            reply(exc)

    def _done(self, name: str, body: Any) -> None:
        """An agent finished a message (its state committed): a waiter of its workflow looks. A host's message names
        its workflow (``wf``, or the key of a ``step_done``), and only that workflow's record can have changed with
        it (a host's work at the end of a batch is for the workflows of the batch's messages)."""
        hosted = self._hosted_waits.get(name)
        if not hosted:
            self._poke(name)
            return
        wf_id = body.get("wf") if isinstance(body, dict) else None
        done = body.get("step_done") if isinstance(body, dict) else None
        if wf_id is None and isinstance(done, dict):
            wf_id = str(done.get("key", "")).split("/", maxsplit=1)[0]
        for wf_name in [PREFIX + wf_id] if isinstance(wf_id, str) and wf_id else list(hosted):
            if wf_name in hosted:
                self._poke(wf_name)

    def removed(self, name: str) -> None:
        self.durable.removed((name,))
        self._poke(name)

    def close(self) -> None:
        for waits in self._waits.values():
            for _, timer in waits:
                timer.cancel()
        self.tasks.close()
        self.durable.close()

    # ---- reading records ----

    def record(self, wf_id: str) -> dict[str, Any]:
        name = PREFIX + wf_id
        record = self._read(name)
        if record is None:
            record = self._starting(name)
        if record is None:
            raise FoundationError(ErrorCode.NO_SUCH_CHILD, f"no workflow {wf_id!r}")
        return record

    def _read(self, name: str) -> dict[str, Any] | None:
        try:
            record, _ = self._app.states.load(name)
        except (StateError, ValueError) as exc:
            raise FoundationError(ErrorCode.INTERNAL, f"cannot read workflow {name!r}: {exc}") from None
        return record if isinstance(record, dict) and record else None

    def _starting(self, name: str) -> dict[str, Any] | None:
        """A workflow whose process has not committed its record yet: what its durable attach, or the ``start``
        message accepted for it and not yet handled, says it will be."""
        spec = self.durable.spec(name)
        start = (spec or {}).get("env", {}).get(START_VARIABLE)
        host = None
        if start:
            begun = orjson.loads(start)
        else:
            broker = self._app.broker
            host = self.host_of(name[len(PREFIX):])
            bodies = broker.undone(name) if broker is not None else []
            if host is not None and broker is not None:
                bodies += [b for b in broker.undone(host) if isinstance(b, dict) and b.get("wf") == name[len(PREFIX):]]
            begun = next((b["start"] for b in bodies if isinstance(b, dict) and isinstance(b.get("start"), dict)),
                         None)
            if begun is None:
                return None
            if not any(isinstance(b, dict) and b.get("wf") for b in bodies):
                host = None
        steps = {t.id: {"state": "pending", "attempts": 0} for t in tasks(parse(begun["definition"]))}
        return {"id": begun["id"], "definition": begun["definition"], "state": "running", "created": None,
                "finished": None, "steps": steps, **({"host": host} if host else {})}

    def summary(self, wf_id: str) -> dict[str, Any]:
        return summary(self.record(wf_id))

    def forget(self, wf_id: str) -> dict[str, Any]:
        """Delete the record of a workflow that has ended; its process is gone by then."""
        record = self.record(wf_id)
        name = PREFIX + wf_id
        if record["state"] not in TERMINAL or self._app.tree.find_quiet(name) is not None:
            raise FoundationError(ErrorCode.BAD_REQUEST, f"workflow {wf_id!r} is {record['state']}: only a workflow "
                                  "that has ended (completed, failed, cancelled) can be forgotten; cancel it first")
        path = shared_store_path(self._state_dir, name)
        store = self._app.states.shared(path) if path is not None else None
        if store is not None:
            store.delete_of(name)
        return {"id": wf_id, "forgotten": True}

    def listing(self) -> list[dict[str, Any]]:
        path = shared_store_path(self._state_dir, PREFIX)
        store = self._app.states.shared(path) if path is not None else None
        names = sorted(n for n in store.names() if n.startswith(PREFIX)) if store is not None else []
        out = []
        for name in names:
            try:
                record = self.record(name[len(PREFIX):])
            except FoundationError:
                continue
            out.append({k: record[k] for k in ("id", "state", "created", "finished")})
        return sorted(out, key=lambda r: r["created"] or float("inf"))

    def wait(self, wf_id: str, reply: Reply, timeout: float) -> None:
        """Answer the summary once the workflow has finished or waits for an operator (or after ``timeout``)."""
        record = self.record(wf_id)
        name = PREFIX + wf_id
        if idle(record) or not self._runs(name, record):
            reply(summary(record))
            return
        timer = self._app.loop.call_later(timeout, lambda: self._expire(name, reply))
        self._waits.setdefault(name, []).append((reply, timer))
        if record.get("host"):
            self._hosted_waits.setdefault(record["host"], set()).add(name)

    def _runs(self, name: str, record: dict[str, Any]) -> bool:
        """Something runs the workflow: its host (a permanent child), or its own process while it is in the tree."""
        return bool(record.get("host")) or self._app.tree.find_quiet(name) is not None

    def _poke(self, name: str) -> None:
        waits = self._waits.get(name)
        if not waits:
            return
        try:
            record = self.record(name[len(PREFIX):])
        except FoundationError as exc:
            record, error = None, exc
        if record is not None and not idle(record) and self._runs(name, record):
            return
        del self._waits[name]
        self._unhost(name)
        for reply, timer in waits:
            timer.cancel()
            reply(summary(record) if record is not None else error)

    def _expire(self, name: str, reply: Reply) -> None:
        waits = self._waits.get(name, [])
        for item in [w for w in waits if w[0] is reply]:
            waits.remove(item)
        if not waits:
            self._waits.pop(name, None)
            self._unhost(name)
        try:
            reply({**self.summary(name[len(PREFIX):]), "pending": True})
        except FoundationError as exc:
            reply(exc)

    def _unhost(self, name: str) -> None:
        for host, names in list(self._hosted_waits.items()):
            names.discard(name)
            if not names:
                del self._hosted_waits[host]

    def _attach_again(self, parent: str, raw: dict[str, Any], ephemeral: bool) -> None:
        spec = child_spec_from_dict(raw, key="spec")
        self._app.apply(self._app.tree.attach(parent, spec, ephemeral=ephemeral))
