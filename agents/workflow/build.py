"""Workflows written in Python: the same definitions as the JSON/TOML files (DESIGN 3.6), built with functions, so
that a program can make one from its own data and start it without writing a file.

    from agents.workflow import Workflows, command, parallel, python, sequential

    flow = sequential(
        parallel(command("fetch-a", ["./fetch", "a"]), command("fetch-b", ["./fetch", "b"])),
        python("merge", "myapp.steps:merge", retry={"maximum_attempts": 5}, idempotent=True),
    )
    with Workflows() as workflows:              # the control socket, found as foundationctl finds it
        wf_id = workflows.run(flow)             # once the run is on disk
        summary = workflows.wait(wf_id)         # {"id", "state", "steps": [...]}

Every builder checks its result with the same parser the daemon uses, so a mistake raises DefinitionError here,
naming the step. Steps run and are checkpointed exactly as a file's: same engine, same promise.
"""

from __future__ import annotations

from typing import Any

from ipc.workflow_def import parse

Step = dict[str, Any]


def task(step_id: str, action: str, args: dict[str, Any], *, retry: dict[str, Any] | None = None,
         timeout: float | None = None, idempotent: bool = False) -> Step:
    body: dict[str, Any] = {"id": step_id, "action": action, "args": args}
    if retry is not None:
        body["retry"] = retry
    if timeout is not None:
        body["timeout"] = timeout
    if idempotent:
        body["idempotent"] = True
    step = {"task": body}
    parse(step)
    return step


def command(step_id: str, argv: list[str], *, env: dict[str, str] | None = None, working_dir: str | None = None,
            **options: Any) -> Step:
    args: dict[str, Any] = {"command": list(argv)}
    if env:
        args["env"] = dict(env)
    if working_dir is not None:
        args["working_dir"] = working_dir
    return task(step_id, "command", args, **options)


def python(step_id: str, function: str, kwargs: dict[str, Any] | None = None, **options: Any) -> Step:
    return task(step_id, "python", {"function": function, "kwargs": dict(kwargs or {})}, **options)


def call(step_id: str, agent: str, msg: Any, **options: Any) -> Step:
    return task(step_id, "call", {"agent": agent, "msg": msg}, **options)


def parallel(*steps: Step) -> Step:
    step = {"parallel": list(steps)}
    parse(step)
    return step


def sequential(*steps: Step) -> Step:
    step = {"sequential": list(steps)}
    parse(step)
    return step
