"""A task agent (``task-1`` ... ``task-N`` under ``tasks``): runs workflow steps handed to it by workflow processes.

    workflow-ID ──{"run": step}──> task-K ── python: import module:function, call it (SIGALRM at the timeout)
                                          ├─ call:   ask the agent, wait for its reply
                                          └─ command: hand it to the daemon's ``tasks`` supervisor and go on
    task-K ──{"step_done"}──> workflow-ID   (for command steps the daemon sends it when the command exits)

A step that is not idempotent gets an intent in this agent's state, committed before it runs: if this process dies
while the step runs, the ``run`` message comes again (it was never marked done) and finds the intent, so the step is
reported ``lost`` (the workflow makes it ambiguous) instead of being run a second time. The ``step_done`` cast leaves
before the handler's commit, marked with the message's sequence number: sent again after a crash, it is dropped by
the broker as a duplicate.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

import orjson

from agents.sdk import Agent
from agents.workflow.client import Daemon
from agents.workflow.errors import classify
from agents.workflow.steps import run_python


class TaskAgent(Agent):
    def __init__(self) -> None:
        self._daemon = Daemon()

    def init(self) -> dict[str, Any]:
        return {"inflight": {}}

    def handle_cast(self, msg: Any, state: dict[str, Any]) -> dict[str, Any]:
        run = msg.get("run") if isinstance(msg, dict) else None
        if not isinstance(run, dict):
            raise TypeError(f"not a task: {msg!r}; expected {{'run': {{...}}}}")
        key = run["key"]
        inflight = dict(state.get("inflight", {}))
        if key in inflight and not run["idempotent"]:
            self._report(run, {"lost": f"{self.name} died while it ran step {run['step']}"})
            inflight.pop(key)
            return {"inflight": inflight}
        if run["action"] == "command":
            self._hand_over(run)
            return state
        if not run["idempotent"]:
            inflight[key] = run["step"]
            self.persist({"inflight": inflight})
        self._report(run, self._execute(run))
        inflight.pop(key, None)
        return {"inflight": inflight}

    def _execute(self, run: dict[str, Any]) -> dict[str, Any]:
        args = run["args"]
        if run["action"] == "python":
            return run_python(args, run["timeout"], run["key"], self.busy)
        try:
            value = self.call(args["agent"], args["msg"], timeout=run["timeout"])
            orjson.dumps(value)
        except Exception as exc:
            print(f"{self.name}: step {run['key']} failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
            return {"error": classify(exc)}
        return {"ok": value}

    def _hand_over(self, run: dict[str, Any]) -> None:
        """A command runs under the daemon (its process group, its timeout); the daemon reports its end."""
        args = run["args"]
        try:
            self._daemon.request("task", op="start", key=run["key"], notify=run["workflow"], step=run["step"],
                                 attempt=run["attempt"], command=args["command"], env=args.get("env", {}),
                                 working_dir=args.get("working_dir"), limits=args.get("limits"),
                                 timeout=run["timeout"])
        except Exception as exc:
            self._report(run, {"error": classify(exc)})

    def _report(self, run: dict[str, Any], result: dict[str, Any]) -> None:
        self.send(run["workflow"], {"step_done": {"step": run["step"], "attempt": run["attempt"], "result": result,
                                                  "key": run["key"]}})  # (a workflow host routes by the key)

