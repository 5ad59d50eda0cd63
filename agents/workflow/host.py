"""A workflow host (``wfhost-K``, a permanent child of ``workflows``): one warm process that runs many workflows,
one after another or at once, each with its own durable record. ``workflow run`` without ``--id`` is handed to one
by the daemon itself (no coordinator hop, no process started for the run).

    foundationd ──{"wf": ID, "start": ...} (durable cast)──> wfhost-K ── the engine on ID's record (as a
                                                               │        workflow's own process runs it)
    task-K, the daemon's tasks ──{"step_done": {key: "ID/step/n"}}──┘ ── routed by the key's workflow id

Its own state is the list of the workflows it runs that are not idle (``{"active": [ID, ...]}``); each workflow's
record stays under ``workflow-ID`` in the shared environment (``<state>/workflows``), where ``workflow status``,
``wait`` and ``list`` read it. Both are committed in one transaction, together with the host's mailbox position
(the runtime's commit, with the changed records as side states: ipc/state_store.py). So the promise is the one of a
workflow's own process (agents/workflow/process.py): killed before a commit, the host comes back, finds the records
and the list as they were, handles the same messages again, makes the same casts (dropped as duplicates by the
broker); an inline step found running in a record it runs was interrupted by its death.

Many workflows at once cost fewer fsyncs: a cast's handler only applies the message to its workflow's record; the
inline steps due are run at the end of the batch of messages that arrived together (``end_batch``), in rounds: each
round commits the intents of every workflow's next inline step in one transaction, then runs them. The casts a
handler makes (task agents' steps, messages to itself) wait for the end of the batch too, and leave before the
batch's commit, all at once (one round trip), in the order of the messages that caused them and marked with their
sequence numbers: sent again after a crash, they are dropped by the broker as duplicates.

Messages: ``{"wf": ID, KIND: body}`` for ``start``, ``retry``, ``advance`` and the operators' calls (``status``,
``cancel``, ``pause``, ``resume``, ``resolve``: the coordinator calls the host named in the record), and
``{"step_done": {..., "key"}}`` from whoever ran a step.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from agents.workflow import engine
from agents.workflow.errors import classify
from agents.workflow.process import PREFIX, WorkflowProcess, task_key
from agents.workflow.steps import Quiet, run_python
from ipc.errors import FoundationError
from ipc.workflow_def import ID_RE, Step, inline, parse

log = logging.getLogger("workflow")

HOST_PREFIX = "wfhost-"
MARKER_SIZE = 256  # bytes of the marker file: a step's key, padded (ids are at most 64 characters each)


class WorkflowHost(WorkflowProcess):
    def __init__(self) -> None:
        super().__init__()
        self._records: dict[str, dict[str, Any]] = {}  # the workflows that are not idle: id -> record
        self._roots: dict[str, Step] = {}
        self._side: dict[str, Any] = {}  # records changed since the last commit: "workflow-ID" -> record
        self._current = ""  # the workflow whose message is being handled
        self._timers: dict[int, str] = {}  # retry timer ref -> workflow id
        self._seq: int | None = None  # the sequence number the casts being made are marked with
        self._outgoing: list[tuple[int, int, str, Any]] = []  # (seq, index, to, body), sent at the end of the batch
        self._counts: dict[int, int] = {}  # casts made so far for each seq
        self._due: list[str] = []  # workflows with inline steps to run at the end of the batch
        self._last_seq = 0  # the highest seq handled in this batch
        self._called: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}  # due by a call: its answer, the record
        self._marker_fd: int | None = None
        self._lost: str | None = None  # the step the marker named at start: see _marked_lost

    def init(self) -> dict[str, Any]:
        return {"active": []}

    def mount(self, state: dict[str, Any]) -> None:
        runtime: Any = self._runtime
        for wf_id in state.get("active", []):  # all loaded first: a recovery's commit writes the whole list
            record = runtime.load_side(PREFIX + wf_id)
            if isinstance(record, dict) and record:
                self._records[wf_id] = record
        self._marked_lost()
        for wf_id, record in list(self._records.items()):
            self._enter(wf_id, record)
            self._recover(record)

    def take_side_states(self) -> dict[str, Any] | None:
        side, self._side = self._side, {}
        return side or None

    def handle_cast(self, msg: Any, state: dict[str, Any]) -> dict[str, Any]:
        wf_id, body = _route(msg)
        seq = self._cause()
        mark = len(self._outgoing)
        try:
            record = self._enter(wf_id, self._load(wf_id))
            record = self._apply(body, record, inline_now=seq is None, advance=False)
        except Exception:
            del self._outgoing[mark:]  # the message failed: nothing it did leaves
            raise
        finally:
            self._seq = None
        if seq is not None and self._inline_due(record) and wf_id not in self._due:
            self._due.append(wf_id)
        return self._settle(wf_id, record)

    def _cause(self) -> int | None:
        """The handled message's seq: its casts are marked with it and wait for the end of the batch."""
        runtime: Any = self._runtime
        self._seq = runtime.cause
        if self._seq is not None:
            self._last_seq = max(self._last_seq, self._seq)
        return self._seq

    def send(self, to: str, body: Any) -> str:
        """In a handler (and at the end of the batch), a cast waits for the end of the batch: see the docstring."""
        if self._seq is None:
            return super().send(to, body)
        count = self._counts[self._seq] = self._counts.get(self._seq, 0) + 1
        self._outgoing.append((self._seq, count, to, body))
        return f"pending/{self._seq}/{count}"

    def end_batch(self, state: dict[str, Any]) -> dict[str, Any]:
        due, self._due = [wf_id for wf_id in self._due if wf_id in self._records], []
        last, self._last_seq = self._last_seq, 0
        # The handlers' casts leave first: the rounds' commits hold records that count on them having left.
        touched = self._flush()
        if due:
            self._rounds(due)
            try:
                for wf_id in due:  # the steps after the inline ones: marked after every cast of the batch
                    self._seq = None if wf_id in self._called else last
                    self._dispatch(self._enter(wf_id, self._records[wf_id]), time.time())
            finally:
                self._seq = None
            touched += due + self._flush()
        self._counts = {}
        for wf_id in touched:
            record = self._records.get(wf_id)
            if record is not None:
                self._root = self._roots.get(wf_id)
                self._settle(wf_id, record)
        called, self._called = self._called, {}
        for answer, record in called.values():
            answer.clear()
            answer.update(engine.summary(record))
        return {"active": sorted(self._records)} if touched else state

    def _rounds(self, wf_ids: list[str]) -> None:
        """Each workflow's inline steps, in rounds: one commit of all the intents of a round, then the steps. An
        idempotent step needs no durable intent (it may run again): a round of only such steps commits nothing, and
        their results go with the batch's commit. What stands for its intent is the marker (``_mark``)."""
        quiet = Quiet(self.busy)
        try:
            while True:
                batches, intents = [], False
                for wf_id in wf_ids:
                    record = self._enter(wf_id, self._records[wf_id])
                    assert self._root is not None
                    batch = engine.dispatch(self._root, record, time.time(), select=inline)
                    if batch:
                        batches.append((wf_id, record, batch))
                        self._side[PREFIX + wf_id] = record
                        intents = intents or not all(item.task.idempotent for item in batch)
                if not batches:
                    return
                if intents:
                    self.persist({"active": sorted(self._records)})
                for wf_id, record, batch in batches:
                    self._enter(wf_id, record)
                    assert self._root is not None
                    for item in batch:
                        task = item.task
                        key = task_key(wf_id, task.id, item.attempt)
                        if key == self._lost:
                            self._lost = None
                            result: dict[str, Any] = {"lost": f"{self.name} died while it ran the step"}
                        else:
                            quiet.cover(task.timeout)
                            self._mark(key)
                            result = run_python(task.args, task.timeout, key)
                        now = time.time()
                        delay = engine.outcome(self._root, record, task.id, item.attempt, result, now=now)
                        if delay is not None:
                            record["steps"][task.id]["retry_at"] = now + delay
                            self._arm_retry(task.id, item.attempt, delay)
        finally:
            quiet.end()

    # ---- the marker: which step this process runs ----

    def _marker(self) -> Path:
        return Path(os.environ.get("FOUNDATION_STATE_DIR", ".")) / "workflows" / f"{self.name}.running"

    def _mark(self, key: str) -> None:
        """The step about to run, in a small file, not fsync'd: it survives this process's death (not the
        machine's), which is what it is for. A step without a durable intent that kills its process would otherwise
        run again at every restart, forever, never counting an attempt (and stop every workflow of the host)."""
        if self._marker_fd is None:
            self._marker_fd = os.open(self._marker(), os.O_WRONLY | os.O_CREAT, 0o600)
        data = key.encode().ljust(MARKER_SIZE)[:MARKER_SIZE]
        os.pwrite(self._marker_fd, data, 0)

    def _marked_lost(self) -> None:
        """At start: the step the marker names was running when this process died. If nothing of it was committed,
        its attempt is dispatched again with the same number: that one is not run but counted as lost (as an
        attempt with an intent is), so an idempotent step that kills its process is retried as its policy says."""
        try:
            self._lost = self._marker().read_bytes().decode(errors="replace").strip() or None
        except OSError:
            self._lost = None

    def shutdown(self, state: dict[str, Any]) -> None:
        if self._marker_fd is not None:
            os.close(self._marker_fd)
            self._marker_fd = None

    def _flush(self) -> list[str]:
        """Send the batch's casts, in the order of their causes; a refused step is a failed attempt (retried as
        any). Returns the workflows whose records that changed."""
        out = sorted(self._outgoing, key=lambda c: (c[0], c[1]))
        self._outgoing = []
        if not out:
            return []
        runtime: Any = self._runtime
        answers = runtime.send_marked([(to, body, [seq, count]) for seq, count, to, body in out])
        changed = []
        for (_, _, to, body), answer in zip(out, answers, strict=True):
            if not isinstance(answer, FoundationError):
                continue
            run = body.get("run") if isinstance(body, dict) else None
            wf_id = str(run["key"]).split("/", maxsplit=1)[0] if isinstance(run, dict) else ""
            record = self._records.get(wf_id)
            if run is None or record is None:
                log.warning("%s: a cast to %s was refused: %s", self.name, to, answer)
                continue
            self._enter(wf_id, record)
            assert self._root is not None
            now = time.time()
            delay = engine.outcome(self._root, record, run["step"], run["attempt"], {"error": classify(answer)},
                                   now=now)
            if delay is not None:
                record["steps"][run["step"]]["retry_at"] = now + delay
                self._arm_retry(run["step"], run["attempt"], delay)
            changed.append(wf_id)
        return changed

    def handle_call(self, msg: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        wf_id, body = _route(msg)
        record = self._enter(wf_id, self._load(wf_id))
        if body.get("status"):
            return (engine.summary(record) if record else None), state
        if "start" in body:
            return self._start_now(wf_id, body, record)
        if not record:
            raise ValueError(f"no workflow {wf_id!r} on {self.name}")
        mark = len(self._outgoing)
        self._cause()
        try:
            record = self._apply(body, record, inline_now=False)
        except Exception:
            del self._outgoing[mark:]
            raise
        finally:
            self._seq = None
        return engine.summary(record), self._settle(wf_id, record)

    def _start_now(self, wf_id: str, body: dict[str, Any], record: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """A run handed over by a call (the daemon's ``run`` with ``wait``): its inline steps run at the end of the
        batch with the others', and the answer, its summary then, leaves once committed (the runtime encodes a
        reply when its ``done`` leaves: the dict returned here is filled in by ``end_batch``), so the caller's wait
        costs no message of its own. A call is not kept by the daemon: if this process dies first, the caller is
        told, and the run is the record's (if a commit made it) or nothing. Its casts carry no mark (a call is never
        handled twice, and a mark of a cast's seq would be taken from the casts of a replay)."""
        record = self._apply(body, record, inline_now=False, advance=False)
        self._settle(wf_id, record)
        answer = engine.summary(record)
        if wf_id in self._records and self._inline_due(record) and wf_id not in self._due:
            self._due.append(wf_id)
            self._called[wf_id] = (answer, record)
        return answer, self._settle(wf_id, record)

    def handle_info(self, info: Any, state: dict[str, Any]) -> dict[str, Any]:
        ref = info.get("tick") if isinstance(info, dict) else None
        if isinstance(ref, int) and ref in self._timers:
            self._current = self._timers.pop(ref)
            self._cause()
            try:
                super().handle_info(info, state)
            finally:
                self._seq = None
        return state

    # ---- the hooks of WorkflowProcess ----

    def _new_record(self, body: dict[str, Any], now: float) -> dict[str, Any]:
        return {**engine.new_record(body["id"], body["definition"], now), "host": self.name}

    def _to_self(self, body: dict[str, Any]) -> None:
        self.send(self.name, {"wf": self._current, **body})

    def _persist_record(self, record: dict[str, Any]) -> None:
        self._side[PREFIX + self._current] = record
        self.persist({"active": sorted({*self._records, self._current})})

    def _finished(self) -> None:
        """The host stays: the workflow leaves its list when the handler is over (``_settle``)."""

    def _arm_retry(self, step_id: str, attempt: int, delay: float) -> None:
        ref = self.set_timer(max(delay, 0.001))
        self._retries[ref] = (step_id, attempt)
        self._timers[ref] = self._current

    # ---- records ----

    def _load(self, wf_id: str) -> dict[str, Any]:
        record = self._records.get(wf_id)
        if record is None:
            runtime: Any = self._runtime
            loaded = runtime.load_side(PREFIX + wf_id)
            record = loaded if isinstance(loaded, dict) else {}
        return record

    def _enter(self, wf_id: str, record: dict[str, Any]) -> dict[str, Any]:
        """Make ``wf_id`` the workflow the engine's code works on."""
        self._current = wf_id
        root = self._roots.get(wf_id)
        if root is None and record:
            root = self._roots[wf_id] = parse(record["definition"])
        self._root = root
        return record

    def _settle(self, wf_id: str, record: dict[str, Any]) -> dict[str, Any]:
        """After a handler that succeeded: the record goes with the next commit; an idle workflow leaves the list."""
        if record:
            self._side[PREFIX + wf_id] = record
            if engine.idle(record):
                self._records.pop(wf_id, None)
                self._roots.pop(wf_id, None)
            else:
                self._records[wf_id] = record
                if self._root is not None:
                    self._roots[wf_id] = self._root
        return {"active": sorted(self._records)}


def _route(msg: Any) -> tuple[str, dict[str, Any]]:
    """``(workflow id, the message as a workflow's own process takes it)``."""
    if isinstance(msg, dict) and "wf" in msg:
        wf_id, body = msg["wf"], {k: v for k, v in msg.items() if k != "wf"}
    elif isinstance(msg, dict) and isinstance(msg.get("step_done"), dict):
        wf_id, body = str(msg["step_done"].get("key", "")).split("/", maxsplit=1)[0], msg
    else:
        raise ValueError(f"not a workflow host message: {msg!r}")
    if not isinstance(wf_id, str) or not ID_RE.fullmatch(wf_id):
        raise ValueError(f"not a workflow id: {wf_id!r}")
    return wf_id, body

