"""The coordinator (``coordinator``): the front desk of workflows. It holds no workflow state.

    workflow run ──call {"run"}──> coordinator ── attach workflow-ID under ``workflows`` (durable: the daemon
                                               │  brings it back after its own restart)
                                               └─ the definition rides in its environment (and in the durable
                                                  record of the attach): the run is on disk, the id is the reply;
                                                  a definition over 64 KiB goes by a call {"start"} instead
    cancel, pause, resume, resolve ──> attach workflow-ID again if it has exited, then call it; a workflow run by a
                                       host (its record names it: agents/workflow/host.py) is the host's to answer
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
        self._warm = int(os.environ.get("FOUNDATION_WORKFLOW_POOL", "0"))
        self._refilling = False

    def init(self) -> dict[str, Any]:
        return {"pool": []}

    def mount(self, state: dict[str, Any]) -> None:
        """The warm pool: workflow processes started ahead, under ids of their own, each waiting for its
        ``start``. A run without ``--id`` takes one, so it does not wait for a process to start. They are durable
        children: after a restart of the daemon they come back, and are still ours (their ids are in our state)."""
        pool = [i for i in state.get("pool", []) if self._read(i) is None]
        for wf_id in pool:
            self._attach(wf_id, again=True, sync=False)
        self._drop_strays(pool)
        pool = self._refill(pool)
        if pool != state.get("pool"):
            self.persist({**state, "pool": pool})
            state["pool"] = pool

    def _drop_strays(self, pool: list[str]) -> None:
        """Pooled processes we took but never gave a run (we died in between) wait forever: detach them."""
        try:
            tree = self._daemon.request("status", name="workflows")["tree"]
        except FoundationError:
            return
        for child in _children_of(tree, "workflows"):
            wf_id = child["name"][len(PREFIX):]
            if child["name"].startswith(PREFIX) and wf_id not in pool and self._read(wf_id) is None:
                try:  # a run given an id whose process has not committed its record yet is no stray: the
                    self._daemon.request("workflow", op="status", id=wf_id)  # daemon knows it from its attach
                    continue
                except FoundationError:
                    pass
                try:
                    self._daemon.request("detach", name=child["name"])
                except FoundationError:
                    pass

    def _refill(self, pool: list[str]) -> list[str]:
        pool = list(pool)
        while len(pool) < self._warm:
            wf_id = secrets.token_hex(5)
            self._attach(wf_id, sync=False)
            pool.append(wf_id)
        return pool

    def handle_call(self, msg: Any, state: Any) -> tuple[Any, Any]:
        if not isinstance(msg, dict) or len(msg) != 1:
            raise FoundationError(ErrorCode.BAD_REQUEST, f"not a coordinator request: {msg!r}")
        ((kind, body),) = msg.items()
        if kind == "run" and not body.get("id") and state.get("pool"):
            return self._run_warm(body, state)
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

    def _run_warm(self, body: dict[str, Any], state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """A run on a process of the warm pool: its ``start`` call is answered once the record is committed."""
        try:
            parse(body.get("definition"))
        except DefinitionError as exc:
            raise FoundationError(ErrorCode.BAD_REQUEST, f"invalid workflow: {exc}") from None
        pool = list(state["pool"])
        while pool:
            wf_id = pool.pop(0)
            # Taken for good before the cast, so that no later run can be given the same process.
            self.persist({**state, "pool": pool})
            try:  # once accepted, the cast is on disk: the run is (until the process has handled it, the daemon
                # answers status and wait from the accepted message)
                self.send(PREFIX + wf_id, {"start": {"id": wf_id, "definition": body["definition"]}})
            except FoundationError:
                continue  # that process is gone: the next one
            self._refill_soon()
            return {"id": wf_id}, {**state, "pool": pool}
        reply = self._run(body)  # the pool was used up: start one now
        self._refill_soon()
        return reply, {**state, "pool": pool}

    def _refill_soon(self) -> None:
        """After the answer: starting a process for the pool is not the caller's wait."""
        if not self._refilling:
            self._refilling = True
            self.set_timer(0.001)

    def handle_info(self, info: Any, state: dict[str, Any]) -> dict[str, Any]:
        if isinstance(info, dict) and "tick" in info and self._refilling:
            self._refilling = False
            return {**state, "pool": self._refill(state.get("pool", []))}
        return state

    def _operate(self, kind: str, body: dict[str, Any]) -> Any:
        wf_id = body.get("id")
        host = self._record(wf_id).get("host")  # it exists
        if isinstance(host, str) and host:
            return self.call(host, {"wf": wf_id, kind: body}, timeout=30.0)
        return self._ask(wf_id, {kind: body})

    def _ask(self, wf_id: str, request: dict[str, Any]) -> Any:
        """Call the workflow's process (answered once its record is committed), attaching it again if it is not in
        the tree: a call, not a cast, so that an answer means applied; a process that exits meanwhile is asked again."""
        for attempt in range(3):  # the process may be exiting just as we ask: attach it again and ask again
            if attempt > 0:
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
        for name in sorted(n for n in (store.names() if store is not None else []) if n.startswith(PREFIX)):
            wf_id = name[len(PREFIX):]
            record = self._read(wf_id)
            if record is not None:
                out.append({"id": wf_id, "state": record["state"], "created": record["created"],
                            "finished": record["finished"]})
        return sorted(out, key=lambda r: r["created"])



def _children_of(node: dict[str, Any], name: str) -> list[dict[str, Any]]:
    if node.get("name") == name:
        return list(node.get("children", []))
    for child in node.get("children", []):
        found = _children_of(child, name)
        if found:
            return found
    return []
