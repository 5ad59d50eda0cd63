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

Messages: ``{"wf": ID, KIND: body}`` for ``start``, ``retry``, ``advance`` and the operators' calls (``status``,
``cancel``, ``pause``, ``resume``, ``resolve``: the coordinator calls the host named in the record), and
``{"step_done": {..., "key"}}`` from whoever ran a step.
"""

from __future__ import annotations

from typing import Any

from agents.workflow import engine
from agents.workflow.process import PREFIX, WorkflowProcess
from ipc.workflow_def import ID_RE, Step, parse

HOST_PREFIX = "wfhost-"


class WorkflowHost(WorkflowProcess):
    def __init__(self) -> None:
        super().__init__()
        self._records: dict[str, dict[str, Any]] = {}  # the workflows that are not idle: id -> record
        self._roots: dict[str, Step] = {}
        self._side: dict[str, Any] = {}  # records changed since the last commit: "workflow-ID" -> record
        self._current = ""  # the workflow whose message is being handled
        self._timers: dict[int, str] = {}  # retry timer ref -> workflow id

    def init(self) -> dict[str, Any]:
        return {"active": []}

    def mount(self, state: dict[str, Any]) -> None:
        runtime: Any = self._runtime
        for wf_id in state.get("active", []):  # all loaded first: a recovery's commit writes the whole list
            record = runtime.load_side(PREFIX + wf_id)
            if isinstance(record, dict) and record:
                self._records[wf_id] = record
        for wf_id, record in list(self._records.items()):
            self._enter(wf_id, record)
            self._recover(record)

    def take_side_states(self) -> dict[str, Any] | None:
        side, self._side = self._side, {}
        return side or None

    def handle_cast(self, msg: Any, state: dict[str, Any]) -> dict[str, Any]:
        wf_id, body = _route(msg)
        record = self._enter(wf_id, self._load(wf_id))
        return self._settle(wf_id, self._apply(body, record))

    def handle_call(self, msg: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        wf_id, body = _route(msg)
        record = self._enter(wf_id, self._load(wf_id))
        if body.get("status"):
            return (engine.summary(record) if record else None), state
        if not record:
            raise ValueError(f"no workflow {wf_id!r} on {self.name}")
        record = self._apply(body, record, inline_now=False)
        return engine.summary(record), self._settle(wf_id, record)

    def handle_info(self, info: Any, state: dict[str, Any]) -> dict[str, Any]:
        ref = info.get("tick") if isinstance(info, dict) else None
        if isinstance(ref, int) and ref in self._timers:
            self._current = self._timers.pop(ref)
            super().handle_info(info, state)
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

