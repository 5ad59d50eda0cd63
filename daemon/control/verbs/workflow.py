"""``workflow``: run and watch durable workflows (DESIGN 3.6).

Wire: ``{"verb": "workflow", "args": {"op": OP, ...}}`` with OP
  ``run`` (``definition``, ``id``?, ``wait``?) -> ``{"id"}`` once the run is on disk: without ``id`` a workflow
  host takes it (the daemon hands it over: daemon/services/workflows.py), with one the coordinator attaches its own
  process; with ``wait`` (seconds) the answer is ``wait``'s, plus ``"id"``, in one request;
  ``status`` / ``results`` (``id``) -> the record's summary / ``{"step id": result}``, read from the workflow's
  committed state by the daemon itself, so they answer while the coordinator is down;
  ``wait`` (``id``, ``timeout``) -> the summary once the workflow's process has left the tree (it has finished, or
  waits for an operator), or after ``timeout`` with ``"pending": true``;
  ``list`` (``state``?) -> ``[{"id", "state", "created", "finished"}]``, oldest first;
  ``forget`` (``id``) deletes the record of a workflow that has ended (completed, failed, cancelled);
  ``cancel`` / ``pause`` / ``resume`` (``id``), ``resolve`` (``id``, ``step``, ``done`` | ``retry``): the coordinator
  hands them to the workflow's process (attaching it again if it had exited).
CLI: ``foundationctl workflow run FILE [--id ID]``, ``status ID [--json]``, ``wait ID [--timeout S]`` (exit 0
completed, 1 otherwise), ``results ID``, ``list [--state S] [--json]``, ``cancel|pause|resume|forget ID``,
``resolve ID STEP (--done JSON | --retry)``. FILE is JSON or TOML (by its extension; ``-`` reads JSON on stdin).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Protocol

import orjson

from daemon.control.cli_common import EXIT_DAEMON_ERROR, EXIT_OK, add_json, print_result
from daemon.control.verbs.base import Reply, Verb, str_arg
from ipc.control import ControlClient, Request
from ipc.errors import ErrorCode, FoundationError
from ipc.workflow_def import DefinitionError, parse
from ipc.workflow_record import STATES

COORDINATOR = "coordinator"
OPS = ("run", "status", "wait", "results", "list", "cancel", "pause", "resume", "resolve", "forget")
CALL_TIMEOUT = 60.0


class Context(Protocol):
    broker: Any
    workflows: Any
    obs: Any


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    op = req.args.get("op")
    if op not in OPS:
        raise FoundationError(ErrorCode.BAD_REQUEST, f"'op' must be one of {', '.join(OPS)}")
    side = ctx.workflows
    if op == "list":
        state = req.args.get("state")
        if state is not None and state not in STATES:
            raise FoundationError(ErrorCode.BAD_REQUEST, f"'state' must be one of {', '.join(STATES)}")
        reply([w for w in side.listing() if state is None or w["state"] == state])
        return
    if op == "run":
        _run(ctx, req.args, reply)
        return
    if op in ("cancel", "pause", "resume", "resolve"):
        _ask_coordinator(ctx, op, req.args, reply)
        return
    wf_id = str_arg(req.args, "id")
    if op == "status":
        reply(side.summary(wf_id))
    elif op == "forget":
        reply(side.forget(wf_id))
    elif op == "results":
        from ipc.workflow_record import results

        reply(results(side.record(wf_id)))
    else:
        timeout = req.args.get("timeout", 3600.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 86400:
            raise FoundationError(ErrorCode.BAD_REQUEST, "'timeout' must be seconds in (0, 86400]")
        side.wait(wf_id, reply, float(timeout))


def _run(ctx: Context, args: dict[str, Any], reply: Reply) -> None:
    try:
        parse(args.get("definition"))
    except DefinitionError as exc:
        raise FoundationError(ErrorCode.BAD_REQUEST, f"invalid workflow: {exc}") from None
    wait = args.get("wait")
    if wait is not None and (isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 < wait <= 86400):
        raise FoundationError(ErrorCode.BAD_REQUEST, "'wait' must be seconds in (0, 86400]")
    side = ctx.workflows

    def then(result: Any) -> None:  # the coordinator's answer; with wait, then wait here
        if wait is not None and isinstance(result, dict) and "id" in result:
            try:
                side.wait(result["id"], lambda summary: reply(
                    summary if isinstance(summary, Exception) else {**summary, "id": result["id"]}), float(wait))
            except FoundationError as exc:
                reply(exc)
            return
        reply(result)

    if not args.get("id") and side.hosts():
        side.run(args["definition"], reply, float(wait) if wait is not None else None)
    else:
        _ask_coordinator(ctx, "run", {k: v for k, v in args.items() if k != "wait"}, then)


def _ask_coordinator(ctx: Context, op: str, args: dict[str, Any], reply: Reply) -> None:
    body = {k: v for k, v in args.items() if k != "op"}
    if op == "run":
        try:
            parse(body.get("definition"))
        except DefinitionError as exc:
            raise FoundationError(ErrorCode.BAD_REQUEST, f"invalid workflow: {exc}") from None

    def respond(result: Any, err: FoundationError | None) -> None:
        if err is not None:
            reply(err)
            return
        if op == "run" and isinstance(result, dict):
            ctx.obs.workflow_step("run", workflow=result.get("id"))  # (an event: workflow_step, phase run)
        reply(result)

    ctx.broker.call(COORDINATOR, {op: body}, CALL_TIMEOUT, respond)


# ---- foundationctl ----

def setup(parser: argparse.ArgumentParser) -> None:
    ops = parser.add_subparsers(dest="op", metavar="OP", required=True)
    run = ops.add_parser("run", help="start a workflow from FILE (JSON or TOML); prints its id once it is on disk")
    run.add_argument("file", metavar="FILE")
    run.add_argument("--id", help="the workflow's id (default: a random one)")
    for name, text in (("status", "steps and their states"), ("results", "the results of the steps done"),
                       ("forget", "delete a finished workflow's record"),
                       ("cancel", "cancel it (kills its running commands)"), ("pause", "start no more steps"),
                       ("resume", "go on after pause")):
        sub = ops.add_parser(name, help=text)
        sub.add_argument("id", metavar="ID")
        add_json(sub)
    wait = ops.add_parser("wait", help="wait until it has finished; exit 0 if it completed")
    wait.add_argument("id", metavar="ID")
    wait.add_argument("--timeout", type=float, default=3600.0, metavar="S", help="seconds (3600)")
    add_json(wait)
    listing = ops.add_parser("list", help="every workflow with its state")
    listing.add_argument("--state", choices=STATES, help="only the workflows in this state")
    add_json(listing)
    resolve = ops.add_parser("resolve", help="settle an ambiguous step: its result, or run it once more")
    resolve.add_argument("id", metavar="ID")
    resolve.add_argument("step", metavar="STEP")
    how = resolve.add_mutually_exclusive_group(required=True)
    how.add_argument("--done", metavar="JSON", help="the step did run: this is its result")
    how.add_argument("--retry", action="store_true", help="run the step once more")
    add_json(resolve)


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.op == "run":
        args.definition = _load_file(parser, args.file)
    if args.op == "wait" and not 0 < args.timeout <= 86400:
        parser.error("--timeout must be seconds in (0, 86400]")
    if args.op == "resolve" and args.done is not None:
        try:
            args.done = orjson.loads(args.done)
        except orjson.JSONDecodeError as exc:
            parser.error(f"--done: not JSON: {exc}")


def _load_file(parser: argparse.ArgumentParser, path: str) -> Any:
    """Read and check the definition here, so that a bad file is a usage error naming the step (exit 2)."""
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        parser.error(f"cannot read {path}: {exc.strerror or exc}")
    try:
        if path.endswith(".toml"):
            import tomllib

            definition: Any = tomllib.loads(raw.decode())
        else:
            definition = orjson.loads(raw)
        parse(definition)
    except (ValueError, UnicodeDecodeError) as exc:  # (JSON, TOML and definition errors are all ValueErrors)
        parser.error(f"{path}: {exc}")
    return definition


def run(client: ControlClient, args: argparse.Namespace) -> int:
    op = args.op
    if op == "run":
        result = client.request("workflow", op="run", definition=args.definition,
                                **({"id": args.id} if args.id else {}))
        print(result["id"])
        return EXIT_OK
    if op == "list":
        result = client.request("workflow", op="list", **({"state": args.state} if args.state else {}))
        print_result(args, result, lambda: "\n".join(f"{w['id']}\t{w['state']}" for w in result) or "(none)")
        return EXIT_OK
    if op == "wait":
        client.settimeout(args.timeout + 10)
        result = client.request("workflow", op="wait", id=args.id, timeout=args.timeout)
        print_result(args, result, lambda: _render(result))
        return EXIT_OK if result.get("state") == "completed" else EXIT_DAEMON_ERROR
    if op == "results":
        result = client.request("workflow", op="results", id=args.id)
        print(orjson.dumps(result).decode())
        return EXIT_OK
    extra: dict[str, Any] = {}
    if op == "resolve":
        extra = {"step": args.step, "retry": True} if args.retry else {"step": args.step, "done": args.done}
    result = client.request("workflow", op=op, id=args.id, **extra)
    print_result(args, result, lambda: f"forgot workflow {args.id}" if op == "forget" else _render(result))
    return EXIT_OK


def _render(summary: dict[str, Any]) -> str:
    lines = [f"workflow {summary['id']}: {summary['state']}" + (" (still going)" if summary.get("pending") else "")]
    for step in summary.get("steps", []):
        detail = ""
        if "error" in step:
            detail = f"  {step['error'].get('code')}: {step['error'].get('message')}"
        elif "result" in step:
            detail = "  " + orjson.dumps(step["result"]).decode()[:80]
        took = f" {step['duration_s'] * 1000:.1f} ms" if "duration_s" in step else ""
        lines.append(f"  {step['id']:<20} {step['state']:<10} attempts {step['attempts']}{took}{detail}")
    return "\n".join(lines)


VERB = Verb("workflow", "run and watch durable workflows", "write", handle, run, setup=setup, check=check,
            read_ops=frozenset({"status", "wait", "results", "list"}))
