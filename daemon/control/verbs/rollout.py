"""``rollout``: roll an agent version out to a set of workers, canary first, with automatic rollback (DESIGN 3.8).

Wire: ``{"verb": "rollout", "args": {"op": "start", "supervisor": SUP | "children": [NAME, ...], "agent":
"module:Class"?, "env": {NAME: VALUE}?, "canary": PERCENT (10), "stages": [PERCENT, ..., 100]?, "hold": S (300),
"interval": S (5), "window": S (60), "id": TEXT?}}`` (the canary's share of the targets, at least one, is changed
first; after ``hold`` seconds with no gate failed, the next stage's share, by default the rest; after the last
stage's ``hold``, done; when a hold ends with fewer data than the gates need, phase ``paused``);
``{"op": "resume", "id": NAME?}`` (a paused rollout goes on to its next stage); ``{"op": "abort", "reason":
TEXT?}`` (every changed child gets its previous spec back). Each answers the rollout's status, as ``rollouts``
does. Errors: ``bad_request`` (no such supervisor or worker, a command worker given an agent class, already at
that version, bad stages, resume of another rollout), ``busy`` (a rollout is in progress), ``not_ready`` (abort or
resume with no rollout in progress, resume of one that is not paused).
CLI: ``foundationctl rollout start (--supervisor SUP | --children A,B) [--agent MODULE:CLASS] [--env K=V]...
[--canary PERCENT | --stages 10,50,100] [--hold S] [--interval S] [--window S]``, ``rollout status [--json]``
(asks the read-only ``rollouts``), ``rollout resume [NAME]``, ``rollout abort [--reason TEXT]``.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any, Protocol

from daemon.control.cli_common import EXIT_OK, add_json, print_result
from daemon.control.verbs.base import Reply, Verb
from ipc.control import ControlClient, Request
from ipc.errors import ErrorCode, FoundationError

if TYPE_CHECKING:
    from daemon.services.flags import FlagService

OPS = ("start", "resume", "abort")


class Context(Protocol):
    flags: FlagService


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    op = req.args.get("op")
    if op not in OPS:
        raise FoundationError(ErrorCode.BAD_REQUEST, f"'op' must be one of {', '.join(OPS)}")
    if op == "start":
        reply(ctx.flags.rollouts.begin(dict(req.args), by=repr(peer)))
    elif op == "resume":
        ident = req.args.get("id")
        reply(ctx.flags.rollouts.resume(ident if isinstance(ident, str) else None, repr(peer)))
    else:
        reason = req.args.get("reason")
        reply(ctx.flags.rollouts.abort(repr(peer), reason if isinstance(reason, str) else None))


def setup(parser: argparse.ArgumentParser) -> None:
    ops = parser.add_subparsers(dest="op", metavar="OP", required=True)
    go = ops.add_parser("start", help="a new version: the canary's share of the targets, then, held, all")
    which = go.add_mutually_exclusive_group(required=True)
    which.add_argument("--supervisor", metavar="SUP", help="every worker directly under SUP")
    which.add_argument("--children", metavar="A,B", help="these workers")
    go.add_argument("--agent", metavar="MODULE:CLASS", help="the new agent class")
    go.add_argument("--env", metavar="K=V", action="append", default=[], help="an env entry of the new version")
    go.add_argument("--canary", type=float, default=10.0, metavar="PERCENT", help="the canary's share (10)")
    go.add_argument("--stages", metavar="P,P,...,100", help="rising percentages instead of --canary then all")
    go.add_argument("--hold", type=float, default=300.0, metavar="S", help="seconds each phase holds (300)")
    go.add_argument("--interval", type=float, default=5.0, metavar="S", help="seconds between gate checks (5)")
    go.add_argument("--window", type=float, default=60.0, metavar="S", help="seconds of data the gates judge (60)")
    go.add_argument("--id", help="the rollout's name (default rollout-TIMESTAMP)")
    add_json(go)
    add_json(ops.add_parser("status", help="the rollout's phase, its gates and history"))
    go_on = ops.add_parser("resume", help="a paused rollout (too few data to judge) goes on to its next stage")
    go_on.add_argument("id", nargs="?", metavar="NAME", help="the rollout's name (checked against the current one)")
    add_json(go_on)
    stop = ops.add_parser("abort", help="restore the previous spec on every changed child")
    stop.add_argument("--reason", help="why (in the rollback event)")
    add_json(stop)


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for entry in getattr(args, "env", None) or []:
        if "=" not in entry or entry.startswith("="):
            parser.error(f"--env wants NAME=VALUE, got {entry!r}")
    if args.op == "start" and not args.agent and not args.env:
        parser.error("rollout start needs --agent, --env, or both")
    if getattr(args, "stages", None):
        try:
            [float(p) for p in args.stages.split(",") if p]
        except ValueError:
            parser.error(f"--stages wants percentages separated by commas, got {args.stages!r}")


def run(client: ControlClient, args: argparse.Namespace) -> int:
    if args.op == "status":
        result = client.request("rollouts")
    elif args.op == "resume":
        result = client.request("rollout", op="resume", **({"id": args.id} if args.id else {}))
    elif args.op == "abort":
        result = client.request("rollout", op="abort", **({"reason": args.reason} if args.reason else {}))
    else:
        extra: dict[str, Any] = {"supervisor": args.supervisor} if args.supervisor else {
            "children": [c for c in args.children.split(",") if c]}
        if args.agent:
            extra["agent"] = args.agent
        if args.env:
            extra["env"] = dict(e.split("=", 1) for e in args.env)
        if args.id:
            extra["id"] = args.id
        if args.stages:
            extra["stages"] = [float(p) for p in args.stages.split(",") if p]
        result = client.request("rollout", op="start", canary=args.canary, hold=args.hold, interval=args.interval,
                                window=args.window, **extra)
    print_result(args, result, lambda: render(result))
    return EXIT_OK


def render(result: dict[str, Any]) -> str:
    r = result.get("rollout")
    if r is None:
        return "no rollout"
    to = " ".join([*([r["to"]["agent"]] if r["to"].get("agent") else []),
                   *(f"{k}={v}" for k, v in r["to"].get("env", {}).items())])
    held = f", held {r['held_s']:.0f}s of {r['hold']:g}s" if r.get("held_s") is not None else ""
    waiting = ", applying" if r["phase"] in ("canary", "all", "paused") and not r["applied"] else ""
    stages = r.get("stages") or []
    at = f" {stages[r.get('stage', 0)]:g}% (stages {', '.join(f'{p:g}' for p in stages)})" if stages else ""
    lines = [f"rollout {r['id']}: {r['phase']}{at}{waiting}{held}; to {to}",
             f"changed {len(r['changed'])} of {len(r['targets'])}: {', '.join(r['changed'])}"]
    if r.get("reason"):
        lines.append(f"reason: {r['reason']}")
    if r["phase"] == "paused":
        lines.append(f"paused: go on with `foundationctl rollout resume {r['id']}`, or `rollout abort`")
    gates = r.get("gates")
    if gates:
        lines.append(f"gates: {gates['outcome']}" + "".join(f"\n  FAIL {why}" for why in gates["failed"]))
    lines.extend(f"  FAIL {why}" for why in r.get("crashed") or [])
    for step in r.get("history", [])[-6:]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(step["ts"]))
        why = f" ({step['reason']})" if step.get("reason") else ""
        lines.append(f"  {when} {step['step']} {', '.join(step['names'])} by {step['by']}{why}")
    return "\n".join(lines)


VERB = Verb("rollout", "roll an agent version out: start (canary, then all), status, abort", "write", handle, run,
            setup=setup, check=check)
