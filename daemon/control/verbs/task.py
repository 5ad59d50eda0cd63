"""``task``: the daemon's task supervisor, as the task agents use it for workflow ``command`` steps (not a verb for
people: ``foundationctl task`` exists for debugging and scripts).

Wire: ``{"verb": "task", "args": {"op": "start", "key": "wf/step/attempt", "notify": "workflow-ID", "step", "attempt",
"command": [...], "env": {}, "working_dir": null, "limits": null, "timeout": S}}`` -> ``{"key", "state", ...}``;
``{"op": "kill", "key"}`` (its whole process group, SIGKILL); ``{"op": "status", "key"}`` -> the task's record.
CLI: ``foundationctl task (status|kill) KEY [--json]``.
"""

from __future__ import annotations

import argparse
from typing import Any, Protocol

from daemon.control.cli_common import EXIT_OK, add_json, print_result
from daemon.control.verbs.base import Reply, Verb, str_arg
from ipc.control import ControlClient, Request
from ipc.errors import ErrorCode, FoundationError


class Context(Protocol):
    workflows: Any


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    tasks = ctx.workflows.tasks
    op, key = req.args.get("op"), str_arg(req.args, "key")
    if op == "status":
        reply(tasks.status(key))
    elif op == "kill":
        reply(tasks.kill(key))
    elif op == "start":
        reply(tasks.start(key, notify=str_arg(req.args, "notify"), step=str_arg(req.args, "step"),
                          attempt=_attempt(req.args.get("attempt")), spec=_spec(req.args),
                          timeout=_timeout(req.args.get("timeout"))))
    else:
        raise FoundationError(ErrorCode.BAD_REQUEST, "'op' must be one of start, kill, status")


def _spec(args: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {"command": args.get("command")}
    for key in ("env", "working_dir", "limits"):
        if args.get(key):
            spec[key] = args[key]
    return spec


def _attempt(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FoundationError(ErrorCode.BAD_REQUEST, "'attempt' must be an integer >= 1")
    return value


def _timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise FoundationError(ErrorCode.BAD_REQUEST, "'timeout' must be a positive number of seconds")
    return float(value)


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("op", choices=("status", "kill"), help="what to do")
    parser.add_argument("key", metavar="KEY", help="the task: WORKFLOW/STEP/ATTEMPT")
    add_json(parser)


def run(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.request("task", op=args.op, key=args.key)
    print_result(args, result, lambda: f"{result['key']}: {result['state']}")
    return EXIT_OK


VERB = Verb("task", "a workflow command step run by the daemon (status, kill)", "quiet", handle, run, setup=setup,
            read_ops=frozenset({"status"}))
