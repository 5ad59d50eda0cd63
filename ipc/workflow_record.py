"""A workflow's record as ``workflow status`` shows it: read by the daemon (from the workflow process's committed
state) and by the coordinator, written only by the workflow's own process (agents/workflow/engine.py)."""

from __future__ import annotations

from typing import Any

from ipc.workflow_def import parse, tasks

TERMINAL = frozenset({"completed", "failed", "cancelled"})
STATES = ("running", "completed", "failed", "cancelled", "paused", "waiting")


def idle(record: dict[str, Any]) -> bool:
    """Nothing runs and nothing will without an operator: the workflow's process may exit, a waiter may be told."""
    if any(s["state"] == "running" or s.get("retry_wait") for s in record["steps"].values()):
        return False
    return record["state"] in TERMINAL or record["state"] in ("paused", "waiting")


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """``{"id", "state", "steps": [{"id", "state", "attempts", "result"|"error"}]}`` (DESIGN 3.6), steps in the
    file's order, each with its duration once it has one."""
    root = parse(record["definition"])
    steps = []
    for task in tasks(root):
        step = record["steps"][task.id]
        item: dict[str, Any] = {"id": task.id, "state": step["state"], "attempts": step["attempts"]}
        if step["state"] == "done" and "result" in step:
            item["result"] = step["result"]
        if "error" in step:
            item["error"] = step["error"]
        if step.get("started") is not None and step.get("finished") is not None and step["state"] != "pending":
            item["duration_s"] = round(max(0.0, step["finished"] - step["started"]), 6)
        steps.append(item)
    return {"id": record["id"], "state": record["state"], "created": record["created"],
            "finished": record["finished"], "steps": steps}


def results(record: dict[str, Any]) -> dict[str, Any]:
    """``workflow results``: ``{"step id": result}`` of the steps that are done."""
    return {sid: s["result"] for sid, s in record["steps"].items() if s["state"] == "done"}
