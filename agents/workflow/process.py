"""A workflow's own process: the agent ``workflow-ID``, a dynamic child of the ``workflows`` supervisor.

    coordinator ──attach──> workflow-ID ──{"start"}──> dispatch ──{"run"}──> task-K (python, call)
                                 ^                                      └──> daemon's tasks (command)
                                 └──────────{"step_done"} from task-K or from the daemon──────────┘

Its persisted state is the workflow's record (agents/workflow/engine.py): every change is committed by the agent
runtime together with the message that caused it, and the casts a handler makes leave before that commit, marked
with the message's sequence number. So when this process is killed, the restarted one handles the uncommitted
messages again, makes the same casts, and the broker drops them as duplicates: no step is dispatched twice and no
result is lost (results are durable casts to this agent). When nothing runs and nothing can go on without an
operator (completed, failed, cancelled, paused, waiting), the process exits 0 and leaves the tree; the coordinator
attaches it again for resume, resolve or cancel.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from typing import Any

import orjson

from agents.sdk import Agent
from agents.workflow import engine
from agents.workflow.client import Daemon
from agents.workflow.errors import classify
from agents.workflow.steps import Quiet, run_python
from ipc.errors import FoundationError
from ipc.workflow_def import Step, inline, parse, tasks

log = logging.getLogger("workflow")

PREFIX = "workflow-"
START_VARIABLE = "FOUNDATION_WORKFLOW_START"  # set by the coordinator: {"id", "definition"}


def task_agent(wf_id: str, step_id: str, pool: int) -> str:
    """The task agent that runs a step: fixed by the names, so a replayed dispatch goes to the same one."""
    return f"task-{zlib.crc32(f'{wf_id}/{step_id}'.encode()) % max(1, pool) + 1}"


def task_key(wf_id: str, step_id: str, attempt: int) -> str:
    return f"{wf_id}/{step_id}/{attempt}"


class WorkflowProcess(Agent):
    def __init__(self) -> None:
        self._root: Step | None = None
        self._retries: dict[int, tuple[str, int]] = {}  # timer ref -> (step, attempt)
        self._daemon = Daemon()
        self._pool = int(os.environ.get("FOUNDATION_TASK_AGENTS", "1"))

    def init(self) -> dict[str, Any]:
        return {}

    def mount(self, state: dict[str, Any]) -> None:
        if not state:
            start = os.environ.get(START_VARIABLE)
            if start:  # a cast to ourselves: handled (and committed) as any message; a repeat is ignored
                self.send(self.name, {"start": orjson.loads(start)})
            else:
                _warm_up()
            return
        self._recover(state)

    def _recover(self, state: dict[str, Any]) -> None:
        """A record loaded at start: inline steps it shows running were interrupted; retries wait again."""
        self._root = parse(state["definition"])
        now = time.time()
        interrupted = [t for t in tasks(self._root) if inline(t) and state["steps"][t.id]["state"] == "running"]
        for task in interrupted:  # this process died while it ran them: an intent with no result
            attempt = state["steps"][task.id]["attempts"]
            delay = engine.outcome(self._root, state, task.id, attempt,
                                   {"lost": "the workflow's process died while it ran the step"}, now=now)
            if delay is not None:
                state["steps"][task.id]["retry_at"] = now + delay
        if interrupted:  # then a message to ourselves: its handling settles the workflow (and may end this process)
            self._persist_record(state)
            self._to_self({"advance": {}})
        for sid, step in state["steps"].items():
            if step.get("retry_wait"):
                self._arm_retry(sid, step["attempts"], max(0.0, step.get("retry_at", now) - now))

    def handle_cast(self, msg: Any, state: dict[str, Any]) -> dict[str, Any]:
        return self._apply(msg, state)

    def handle_call(self, msg: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """``{"status": true}``, or an operator's cancel, pause, resume or resolve: a call, so that the coordinator
        knows it was applied (a process that exits meanwhile fails the call, and the coordinator tries again)."""
        if isinstance(msg, dict) and msg.get("status"):
            return (engine.summary(state) if state else None), state
        state = self._apply(msg, state, inline_now=False)
        return engine.summary(state), state

    def _apply(self, msg: Any, state: dict[str, Any], inline_now: bool = True, advance: bool = True
               ) -> dict[str, Any]:
        if not isinstance(msg, dict) or len(msg) != 1:
            raise ValueError(f"not a workflow message: {msg!r}")
        ((kind, body),) = msg.items()
        state = orjson.loads(orjson.dumps(state))  # the engine edits in place; a failing handler must leave no trace
        now = time.time()
        if kind == "start":
            if state:
                return state  # started already (a resend)
            state = self._new_record(body, now)
            self._root = parse(state["definition"])
        elif self._root is None:
            raise ValueError(f"{kind!r} before the workflow was started")
        elif kind == "step_done":
            delay = engine.outcome(self._root, state, body["step"], body["attempt"], body["result"], now=now)
            if delay is not None:
                state["steps"][body["step"]]["retry_at"] = now + delay
                self._arm_retry(body["step"], body["attempt"], delay)
        elif kind == "retry":
            engine.release(state, body["step"], body["attempt"])
        elif kind != "advance":
            self._control(kind, body, state, now)
        if inline_now:
            self._run_inline(state)
        elif advance and self._inline_due(state):  # not in a call: its caller would wait for the steps
            self._to_self({"advance": {}})
        self._dispatch(state, now)
        if engine.idle(state):
            self._finished()
        return state

    # ---- what a workflow host (agents/workflow/host.py) does otherwise ----

    def _new_record(self, body: dict[str, Any], now: float) -> dict[str, Any]:
        return engine.new_record(body["id"], body["definition"], now)

    def _to_self(self, body: dict[str, Any]) -> None:
        """A message to this workflow, handled (and committed) as any other: replayable."""
        self.send(self.name, body)

    def _persist_record(self, record: dict[str, Any]) -> None:
        """Commit the record now, in the middle of a handler (an inline step's intent)."""
        self.persist(record)

    def _finished(self) -> None:
        """Nothing runs and nothing goes on without an operator: this process leaves the tree."""
        self.stop()

    def handle_info(self, info: Any, state: dict[str, Any]) -> dict[str, Any]:
        ref = info.get("tick") if isinstance(info, dict) else None
        due = self._retries.pop(ref, None) if isinstance(ref, int) else None
        if due is not None:  # a cast to ourselves, so that the retry's dispatch is a replayable message
            self._to_self({"retry": {"step": due[0], "attempt": due[1]}})
        return state

    # ---- operators ----

    def _control(self, kind: str, body: Any, state: dict[str, Any], now: float) -> None:
        assert self._root is not None
        if kind == "cancel":
            for sid in engine.cancel(self._root, state, now):
                self._kill(state, sid)
        elif kind == "pause":
            state["paused"] = True
            engine.settle(self._root, state, now)
        elif kind == "resume":
            state["paused"] = False
            engine.settle(self._root, state, now)
        elif kind == "resolve":
            engine.resolve(self._root, state, body["step"], done=body.get("done"), retry=bool(body.get("retry")),
                           now=now)
        else:
            raise ValueError(f"unknown workflow message {kind!r}")

    def _kill(self, state: dict[str, Any], step_id: str) -> None:
        assert self._root is not None
        step = state["steps"][step_id]
        task = next(t for t in tasks(self._root) if t.id == step_id)
        if task.action != "command":
            return  # a python step runs inside a task agent: it finishes, and its result is ignored
        try:
            self._daemon.request("task", op="kill", key=task_key(state["id"], step_id, step["attempts"]))
        except Exception as exc:  # the step is cancelled either way; the command ends at its timeout at worst
            log.warning("%s: could not kill the command of step %s: %s", self.name, step_id, exc)

    # ---- dispatching ----

    def _dispatch(self, state: dict[str, Any], now: float) -> None:
        assert self._root is not None
        for item in engine.dispatch(self._root, state, now, select=lambda task: not inline(task)):
            task = item.task
            run = {"workflow": self.name, "key": task_key(state["id"], task.id, item.attempt), "step": task.id,
                   "attempt": item.attempt, "action": task.action, "args": task.args, "timeout": task.timeout,
                   "idempotent": task.idempotent}
            try:
                self.send(task_agent(state["id"], task.id, self._pool), {"run": run})
            except FoundationError as exc:  # no such task agent, or its mailbox is full: retried as any failure
                delay = engine.outcome(self._root, state, task.id, item.attempt, {"error": classify(exc)}, now=now)
                if delay is not None:
                    state["steps"][task.id]["retry_at"] = now + delay
                    self._arm_retry(task.id, item.attempt, delay)

    def _run_inline(self, state: dict[str, Any]) -> None:
        """Run the ``inline`` python steps that may run, here, one after the other: each one's intent is committed
        with the previous one's result (one fsync a step), and all before any cast of this handler leaves (so a
        crash never leaves a cast that a replay of this message would not make again). An ``idempotent`` step
        gets its intent too: without it, a step that kills its process would be run again at each restart, forever
        (a crash loop of a workflow host, which takes others' workflows with it), and never count an attempt."""
        assert self._root is not None
        quiet = Quiet(self.busy)
        try:
            while batch := engine.dispatch(self._root, state, time.time(), select=inline):
                self._persist_record(state)
                for item in batch:
                    task = item.task
                    quiet.cover(task.timeout)
                    result = run_python(task.args, task.timeout, task_key(state["id"], task.id, item.attempt))
                    now = time.time()
                    delay = engine.outcome(self._root, state, task.id, item.attempt, result, now=now)
                    if delay is not None:
                        state["steps"][task.id]["retry_at"] = now + delay
                        self._arm_retry(task.id, item.attempt, delay)
        finally:
            quiet.end()

    def _inline_due(self, state: dict[str, Any]) -> bool:
        assert self._root is not None
        probe = orjson.loads(orjson.dumps(state))
        return bool(engine.dispatch(self._root, probe, 0.0, select=inline))

    def _arm_retry(self, step_id: str, attempt: int, delay: float) -> None:
        self._retries[self.set_timer(max(delay, 0.001))] = (step_id, attempt)



WARM_UP = {"sequential": [
    {"parallel": [{"task": {"id": "a", "action": "python", "args": {"function": "agents.workflow.examples:noop",
                                                                      "inline": True}}},
                  {"task": {"id": "b", "action": "command", "args": {"command": ["true"]}}}]},
    {"task": {"id": "c", "action": "call", "args": {"agent": "x", "msg": {}}, "retry": {"maximum_attempts": 2}}},
]}


def _warm_up() -> None:
    """A process of the warm pool, forked from the zygote, would pay on its first run for every page its code
    touches (copy-on-write of the objects whose reference counts change, first calls): it runs the engine once on
    a dummy workflow while it waits, so that a run's latency is the work, not the faults. Nothing is kept or sent."""
    record = engine.new_record("warm-up", WARM_UP, 0.0)
    root = parse(WARM_UP)
    for item in engine.dispatch(root, record, 0.0, select=inline):
        result = run_python(item.task.args, 1.0, "warm-up")
        engine.outcome(root, record, item.task.id, item.attempt, result, now=0.0)
    for item in engine.dispatch(root, record, 0.0):
        engine.outcome(root, record, item.task.id, item.attempt, {"ok": None}, now=0.0)
    orjson.loads(orjson.dumps(engine.summary(record)))
