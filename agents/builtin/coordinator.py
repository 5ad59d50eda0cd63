"""The coordinator (``coordinator``): the front desk of workflows. It holds no workflow state.

    workflow run ──call {"run"}──> coordinator ── attach workflow-ID under ``workflows`` (durable: the daemon
                                               │  brings it back after its own restart)
                                               └─ the definition rides in its environment (and in the durable
                                                  record of the attach): the run is on disk, the id is the reply;
                                                  a definition over 64 KiB goes by a call {"start"} instead
    cancel, pause, resume, resolve ──> attach workflow-ID again if it has exited, then call it
    list, status ──> read the workflows' committed records (<state>/workflows, shared by their processes)

Killing the coordinator stops nothing: running workflows do not talk to it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import orjson

from agents.sdk import Agent
from agents.workflow import engine
from agents.workflow.client import Daemon
from agents.workflow.process import PREFIX, START_VARIABLE
from ipc.errors import ErrorCode, FoundationError
from ipc.state_store import SharedStateStore, shared_store_path
from ipc.workflow_def import ID_RE, DefinitionError, parse

OPERATIONS = ("cancel", "pause", "resume", "resolve")
MAX_INLINE = 64 * 1024  # larger definitions go by a call after the attach (an exec'd agent's env string is limited)
PROCESS_AGENT = "agents.workflow.process:WorkflowProcess"
MAX_ID = 64 - len(PREFIX)


class Coordinator(Agent):
    def __init__(self) -> None:
        self._daemon = Daemon()
        self._state_dir = Path(os.environ.get("FOUNDATION_STATE_DIR", "."))
        self._pool = os.environ.get("FOUNDATION_TASK_AGENTS", "1")
        self._records: SharedStateStore | None = None  # the workflows' shared environment, opened once it exists

    def handle_call(self, msg: Any, state: Any) -> tuple[Any, Any]:
        if not isinstance(msg, dict) or len(msg) != 1:
            raise FoundationError(ErrorCode.BAD_REQUEST, f"not a coordinator request: {msg!r}")
        ((kind, body),) = msg.items()
        if kind == "run":
            return self._run(body), state
        if kind == "list":
            return self._list(), state
        if kind == "status":
            return engine.summary(self._record(body["id"])), state
        if kind in OPERATIONS:
            return self._operate(kind, body), state
        raise FoundationError(ErrorCode.BAD_REQUEST, f"unknown request {kind!r}")

    def _run(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            parse(body.get("definition"))
        except DefinitionError as exc:
            raise FoundationError(ErrorCode.BAD_REQUEST, f"invalid workflow: {exc}") from None
        wf_id = body.get("id") or secrets.token_hex(5)
        if not isinstance(wf_id, str) or len(wf_id) > MAX_ID or not ID_RE.fullmatch(wf_id):
            raise FoundationError(ErrorCode.BAD_REQUEST, f"a workflow id is up to {MAX_ID} letters, digits, "
                                  f"'_', '.', '-', not {wf_id!r}")
        if self._read(wf_id) is not None:
            raise FoundationError(ErrorCode.ALREADY_EXISTS, f"a workflow with id {wf_id!r} exists already")
        start = {"id": wf_id, "definition": body["definition"]}
        encoded = orjson.dumps(start).decode()
        if len(encoded) <= MAX_INLINE:  # the attach's durable record holds the run: answered without waiting
            self._attach(wf_id, env={START_VARIABLE: encoded}, sync=False)
        else:
            self._ask(wf_id, {"start": start})
        return {"id": wf_id}

    def _operate(self, kind: str, body: dict[str, Any]) -> Any:
        wf_id = body.get("id")
        self._record(wf_id)  # it exists
        return self._ask(wf_id, {kind: body})

    def _ask(self, wf_id: str, request: dict[str, Any]) -> Any:
        """Call the workflow's process (answered once its record is committed), attaching it first if it is not
        running: a call, not a cast, so that an answer means applied; a process that exits meanwhile is asked again."""
        for attempt in range(3):  # the process may be exiting just as we ask: attach it again and ask again
            self._attach(wf_id, again=True)
            try:
                return self.call(PREFIX + wf_id, request, timeout=30.0)
            except FoundationError as exc:
                if exc.code not in (ErrorCode.AGENT_DOWN, ErrorCode.NO_SUCH_AGENT) or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _attach(self, wf_id: str, again: bool = False, env: dict[str, str] | None = None, sync: bool = True
                ) -> None:
        spec = {"name": PREFIX + wf_id, "agent": PROCESS_AGENT, "restart": "transient", "on_intensity": "park",
                "env": {"FOUNDATION_TASK_AGENTS": self._pool, **(env or {})}}
        try:
            self._daemon.request("attach", parent="workflows", spec=spec, durable=True, ephemeral=True, sync=sync)
        except FoundationError as exc:
            if not (again and exc.code == ErrorCode.ALREADY_EXISTS):
                raise

    def _record(self, wf_id: Any) -> dict[str, Any]:
        if not isinstance(wf_id, str) or not ID_RE.fullmatch(wf_id):
            raise FoundationError(ErrorCode.BAD_REQUEST, f"not a workflow id: {wf_id!r}")
        record = self._read(wf_id)
        if record is None:
            raise FoundationError(ErrorCode.NO_SUCH_CHILD, f"no workflow {wf_id!r}")
        return record

    def _store(self) -> SharedStateStore | None:
        if self._records is None:
            path = shared_store_path(self._state_dir, PREFIX)
            if path is not None and (path / "data.mdb").exists():
                self._records = SharedStateStore(path)
        return self._records

    def _read(self, wf_id: str) -> dict[str, Any] | None:
        store = self._store()
        record = store.load_of(PREFIX + wf_id)[0] if store is not None else None
        return record if isinstance(record, dict) and record else None

    def _list(self) -> list[dict[str, Any]]:
        out = []
        store = self._store()
        for name in sorted(store.names() if store is not None else []):
            wf_id = name[len(PREFIX):]
            record = self._read(wf_id)
            if record is not None:
                out.append({"id": wf_id, "state": record["state"], "created": record["created"],
                            "finished": record["finished"]})
        return sorted(out, key=lambda r: r["created"])

