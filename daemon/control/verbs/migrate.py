"""``migrate``: move a staged migration (``[migration]`` in the config) forward or back (DESIGN 3.8).

Wire: ``{"verb": "migrate", "args": {"op": "next"}}`` (refused with ``not_ready`` unless the current stage has held
for its ``hold`` seconds and none of its gates failed); ``{"op": "rollback"}`` (one stage back, always allowed);
``{"op": "emergency-rollback", "reason": TEXT}`` (to stage 0 at once, skipping every gate). Each answers the
status after the step, as ``{"verb": "flags", "args": {"migration": true}}`` does: ``{"stage", "name", "since",
"held_s", "hold", "ready", "blockers", "gates": {"outcome", "failed", "unjudged", "figures"} | null, "baseline",
"auto_rollback", "window", "interval", "stages": [{"index", "name", "hold", "flags", "state"?}], "history": [...]}``
(a step that changed agents' state migrations has ``state``: each such agent's list from then on).
CLI: ``foundationctl migrate status [--json]``, ``migrate validate`` (readiness only: prints ``ready``, or why not,
and exits 0 or 1; it asks the read-only ``flags``), ``migrate next``, ``migrate rollback``,
``migrate emergency-rollback REASON [--offline [--state-dir DIR]]``: ``--offline`` writes stage 0's flag values
into the state directory's store while the daemon is down (it refuses while the daemon answers).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import TYPE_CHECKING, Any, Protocol

from daemon.control.cli_common import EXIT_OK, add_json, print_result
from daemon.control.verbs.base import Reply, Verb, str_arg
from ipc.control import ControlClient, Request
from ipc.errors import ErrorCode, FoundationError

if TYPE_CHECKING:
    from daemon.services.flags import FlagService

EXIT_NOT_READY = 1  # migrate validate: the next stage may not be entered now
ACTIONS = {"next": "next", "rollback": "rollback", "emergency-rollback": "emergency_rollback"}


class Context(Protocol):
    flags: FlagService


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    op = req.args.get("op")
    if op not in ACTIONS:
        raise FoundationError(ErrorCode.BAD_REQUEST, f"'op' must be one of {', '.join(ACTIONS)}")
    reason = str_arg(req.args, "reason") if op == "emergency-rollback" else req.args.get("reason")
    reply(ctx.flags.migrations.request(ACTIONS[op], by=repr(peer), reason=reason if isinstance(reason, str) else None))


def setup(parser: argparse.ArgumentParser) -> None:
    ops = parser.add_subparsers(dest="op", metavar="OP", required=True)
    add_json(ops.add_parser("status", help="the stage, its gates, whether next may go, the history"))
    add_json(ops.add_parser("validate", help="whether next may go now (exit 0) or why not (exit 1)"))
    add_json(ops.add_parser("next", help="the next stage, if this one held for its hold time with its gates green"))
    back = ops.add_parser("rollback", help="one stage back")
    back.add_argument("--reason", help="why (in the rollback event and the history)")
    add_json(back)
    emergency = ops.add_parser("emergency-rollback", help="to stage 0 at once, skipping every gate")
    emergency.add_argument("reason", metavar="REASON")
    emergency.add_argument("--offline", action="store_true", help="the daemon is down: write the state dir")
    emergency.add_argument("--state-dir", metavar="DIR", help="with --offline: the daemon's state directory")
    add_json(emergency)


def local(args: argparse.Namespace) -> int | None:
    """``emergency-rollback --offline``: no daemon; anything else goes to the daemon (None)."""
    if not getattr(args, "offline", False):
        return None
    from daemon.paths import client_runtime_dirs, state_dir
    from daemon.services.migrations import offline_emergency_rollback
    from ipc.control import SOCKET_NAME, ControlUnreachable

    for directory in client_runtime_dirs(args.runtime_dir):
        try:
            ControlClient(str(directory / SOCKET_NAME), timeout=2).close()
        except ControlUnreachable:
            continue
        raise FoundationError(ErrorCode.BAD_REQUEST, f"foundationd answers at {directory}: use emergency-rollback "
                              "without --offline (the daemon would not see what --offline writes)")
    result = offline_emergency_rollback(state_dir(args.state_dir), args.reason, f"offline uid={os.getuid()}")
    print_result(args, result, lambda: f"rolled back to stage 0 ({result['to']}) offline from {result['from']}; "
                 f"flags changed: {', '.join(result['changed']) or 'none'}")
    return EXIT_OK


def run(client: ControlClient, args: argparse.Namespace) -> int:
    if args.op == "validate":
        status = client.request("flags", migration=True)
        result = {"ready": status["ready"], "blockers": status["blockers"], "stage": status["stage"],
                  "name": status["name"]}
        print_result(args, result, lambda: f"stage {status['stage']} ({status['name']}): " + (
            "ready for next" if status["ready"] else "not ready: " + "; ".join(status["blockers"])))
        return EXIT_OK if status["ready"] else EXIT_NOT_READY
    if args.op == "status":
        result = client.request("flags", migration=True)
    else:
        extra: dict[str, Any] = {"reason": args.reason} if getattr(args, "reason", None) else {}
        result = client.request("migrate", op=args.op, **extra)
    print_result(args, result, lambda: render(result))
    return EXIT_OK


def render(status: dict[str, Any]) -> str:
    held = f", held {status['held_s']:.0f}s of {status['hold']:g}s" if status.get("held_s") is not None else ""
    lines = [f"stage {status['stage']} of {len(status['stages']) - 1}: {status['name']}{held}"]
    gates = status.get("gates")
    if gates:
        lines.append(f"gates: {gates['outcome']}" + "".join(f"\n  FAIL {why}" for why in gates["failed"])
                     + "".join(f"\n  not judged: {why}" for why in gates["unjudged"]))
    lines.append("next: ready" if status["ready"] else "next: not ready: " + "; ".join(status["blockers"]))
    for stage in status["stages"]:
        mark = "*" if stage["index"] == status["stage"] else " "
        values = " ".join(f"{k}={v}" for k, v in stage["flags"].items())
        state = stage.get("state")
        if state:
            values += f" state[{','.join(state['agents'])}]: {state['forward']} (back: {state['reverse']})"
        lines.append(f" {mark} {stage['index']} {stage['name']}  {values}")
    for step in status.get("history", [])[-5:]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(step["ts"]))
        why = f" ({step['reason']})" if step.get("reason") else ""
        lines.append(f"  {when} {step['action']} {step['from']} -> {step['to']} by {step['by']}{why}")
    return "\n".join(lines)


VERB = Verb("migrate", "move the staged migration: status, next, rollback, emergency-rollback", "write", handle, run,
            setup=setup, local=local)
