"""The workflow engine's decisions: pure functions over a workflow's record (plain JSON data) and a clock value.

    run ─> start(record) ─> dispatch [tasks] ─┐
                                             v
    outcome(step, attempt, ok|error|lost) ─> record ─> retry later? ─> {"retry"} cast ─> dispatch
                                             │
                                             └─> next runnable steps ─> dispatch ... ─> completed | failed | waiting

The record is the workflow process's persisted agent state (agents/workflow/process.py), committed together with the
sequence number of the message that changed it. Decisions depend only on the record and the message, never on the
time: a message handled again after a crash (its effects were not committed) makes the same sends, which the broker
then recognises as duplicates. Times are only written down, for ``workflow status``.

Step states: pending, running, done, failed, ambiguous, cancelled. A step is ``ambiguous`` when the process running
it died with it (a "lost" outcome) and the step is not idempotent: running it again could do its effect twice, so
it waits for ``workflow resolve``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ipc.workflow_def import Step, Task, parse, retryable, tasks
from ipc.workflow_record import TERMINAL, idle, results, summary

__all__ = ["TERMINAL", "Dispatch", "idle", "results", "summary"]

STEP_STATES = ("pending", "running", "done", "failed", "ambiguous", "cancelled")


@dataclass(frozen=True)
class Dispatch:
    """Run attempt ``attempt`` of ``task`` now."""

    task: Task
    attempt: int


def new_record(wf_id: str, definition: Any, now: float) -> dict[str, Any]:
    root = parse(definition)
    return {
        "id": wf_id, "definition": definition, "state": "running", "paused": False, "cancelled": False,
        "created": now, "finished": None,
        "steps": {t.id: {"state": "pending", "attempts": 0} for t in tasks(root)},
    }


def dispatch(root: Step, record: dict[str, Any], now: float,
             select: Callable[[Task], bool] = lambda task: True) -> list[Dispatch]:
    """Mark every step that may run now (of those ``select`` takes) as running (one more attempt) and say which
    to dispatch."""
    if record["paused"] or record["cancelled"] or record["state"] in TERMINAL:
        return []
    out = []
    for task in _runnable(root, record["steps"]):
        step = record["steps"][task.id]
        if not select(task):
            continue
        if step.get("retry_wait"):
            continue  # its retry cast will release it
        step["state"], step["attempts"], step["started"] = "running", step["attempts"] + 1, now
        step.pop("error", None)
        out.append(Dispatch(task, step["attempts"]))
    settle(root, record, now)
    return out


def outcome(root: Step, record: dict[str, Any], step_id: str, attempt: int, result: dict[str, Any], *,
            now: float) -> float | None:
    """Record what attempt ``attempt`` of ``step_id`` came to: ``{"ok": value}``, ``{"error": {...}}`` or
    ``{"lost": reason}``. Returns the delay before a retry, if one is due. A result for another attempt, or for a
    step no longer running (cancelled, resolved), is ignored: results can arrive twice."""
    step = record["steps"].get(step_id)
    if step is None or step["state"] != "running" or step["attempts"] != attempt:
        return None
    task = _task(root, step_id)
    step["finished"] = now
    delay = None
    if "ok" in result:
        step["state"], step["result"] = "done", result["ok"]
    elif "lost" in result and not task.idempotent:
        step["state"] = "ambiguous"
        step["error"] = {"code": "ambiguous", "category": "internal", "retryable": False,
                         "message": f"{result['lost']}; the step may or may not have run: "
                                    "resolve it with --done JSON or --retry"}
    else:
        error = result.get("error") or {"code": "lost", "category": "infrastructure",
                                        "message": str(result.get("lost"))}
        step["error"] = error
        if retryable(error, task.retry) and task.retry.allows(attempt):
            step["state"], step["retry_wait"] = "pending", True
            delay = task.retry.delay(attempt)
        else:
            step["state"] = "failed"
    settle(root, record, now)
    return delay


def release(record: dict[str, Any], step_id: str, attempt: int) -> bool:
    """The retry delay after attempt ``attempt`` is over: the step may be dispatched again."""
    step = record["steps"].get(step_id)
    if step is None or step["state"] != "pending" or step["attempts"] != attempt or not step.get("retry_wait"):
        return False
    step.pop("retry_wait")
    return True


def cancel(root: Step, record: dict[str, Any], now: float) -> list[str]:
    """Cancel the workflow; returns the steps that were running (their processes are to be killed)."""
    if record["state"] in TERMINAL:
        return []
    record["cancelled"] = True
    running = []
    for sid, step in record["steps"].items():
        if step["state"] == "running":
            running.append(sid)
        if step["state"] in ("running", "pending", "ambiguous"):
            step["state"], step["finished"] = "cancelled", now
            step.pop("retry_wait", None)
    settle(root, record, now)
    return running


def resolve(root: Step, record: dict[str, Any], step_id: str, *, done: Any, retry: bool, now: float) -> None:
    """An operator's answer for an ambiguous (or failed) step: its result, or run it once more."""
    step = record["steps"].get(step_id)
    if step is None:
        raise ValueError(f"no step {step_id!r} in workflow {record['id']}")
    if step["state"] not in ("ambiguous", "failed"):
        raise ValueError(f"step {step_id!r} is {step['state']}; only an ambiguous or failed step can be resolved")
    if record["cancelled"]:
        raise ValueError(f"workflow {record['id']} was cancelled")
    step.pop("error", None)
    if retry:
        step["state"] = "pending"
    else:
        step["state"], step["result"], step["finished"] = "done", done, now
    record["finished"] = None
    record["state"] = "running"
    settle(root, record, now)


def settle(root: Step, record: dict[str, Any], now: float) -> None:
    """Derive the workflow's state from its steps' (and the pause and cancel flags)."""
    steps = record["steps"]
    status = _status(root, steps)
    running = any(s["state"] == "running" for s in steps.values())
    if record["cancelled"]:
        state = "running" if running else "cancelled"
    elif status == "done":
        state = "completed"
    elif status == "failed":
        state = "running" if running else "failed"
    elif running:
        state = "running"
    elif record["paused"]:
        state = "paused"
    elif status == "blocked":
        state = "waiting"
    else:
        state = "running"
    if state in TERMINAL and record["state"] not in TERMINAL:
        record["finished"] = now
    record["state"] = state


def _task(root: Step, step_id: str) -> Task:
    for task in tasks(root):
        if task.id == step_id:
            return task
    raise KeyError(step_id)


def _status(step: Step, steps: dict[str, Any]) -> str:
    """done | failed | blocked (ambiguous somewhere, nothing else to do) | active (running or runnable)."""
    if isinstance(step, Task):
        state = steps[step.id]["state"]
        return {"done": "done", "failed": "failed", "cancelled": "failed", "ambiguous": "blocked"}.get(state, "active")
    statuses = [_status(child, steps) for child in step.steps]
    if step.kind == "sequential":
        for status in statuses:
            if status != "done":
                return status
        return "done"
    if all(s == "done" for s in statuses):
        return "done"
    if "active" in statuses:
        return "active"
    return "failed" if "failed" in statuses else "blocked"


def _runnable(step: Step, steps: dict[str, Any]) -> list[Task]:
    if isinstance(step, Task):
        return [step] if steps[step.id]["state"] == "pending" else []
    if step.kind == "sequential":
        for child in step.steps:
            status = _status(child, steps)
            if status == "done":
                continue
            return _runnable(child, steps) if status == "active" else []
        return []
    if any(_status(child, steps) == "failed" for child in step.steps):
        return []  # a failed branch fails the group: start nothing more in it
    return [t for child in step.steps for t in _runnable(child, steps)]
