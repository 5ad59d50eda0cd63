"""``history``: the restart history, kept on disk across daemon restarts (the last 10,000): when each child went
down, how (exit status or signal), why (``crash``, ``watchdog``, ``heartbeat``, ``max_memory``, ``intensity``,
``strategy``) and what its supervisor did (``restarted``, ``parked``, ``escalated``). See daemon/services/history.py.

Wire: ``{"verb": "history", "args": {"name"?: NAME, "lines": N}}`` -> ``{"records": [{"ts", "child", "supervisor",
"pid", "exit", "status", "signal", "reason", "outcome", "restarts", "delay"}]}``, oldest first.
CLI: ``foundationctl history [NAME] [-n N] [--json]``.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any, Protocol

from daemon.control.cli_common import EXIT_OK, add_json, print_result
from daemon.control.verbs.base import Reply, Verb, count_arg, str_arg
from ipc.control import ControlClient, Request
from ipc.errors import ErrorCode, FoundationError

if TYPE_CHECKING:
    from daemon.services.observability import Observability


class Context(Protocol):
    obs: Observability


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    name = str_arg(req.args, "name") if "name" in req.args else None
    count = count_arg(req.args, "lines", 50)
    store = ctx.obs.history
    if store is None:
        raise FoundationError(ErrorCode.INTERNAL, "the restart history could not be opened (see the daemon's log)")
    match = None if name is None else (lambda record: name in (record.get("child"), record.get("supervisor")))
    reply({"records": store.last(count, match)})


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", nargs="?", help="only this child (a supervisor: and its children)")
    parser.add_argument("-n", "--lines", type=int, default=50, metavar="N", help="how many recent restarts (50)")
    add_json(parser)


def run(client: ControlClient, args: argparse.Namespace) -> int:
    if args.lines < 0:
        raise FoundationError(ErrorCode.BAD_REQUEST, "-n must be >= 0")
    query: dict[str, Any] = {"lines": args.lines}
    if args.name is not None:
        query["name"] = args.name
    result = client.request("history", **query)
    print_result(args, result, lambda: render(result["records"]))
    return EXIT_OK


def render(records: list[dict[str, Any]]) -> str:
    """``2026-12-03 10:04:05 ticker  crash  killed by SIGKILL  restarted (3rd)``: one line a record."""
    if not records:
        return "no restarts recorded"
    width = max(len(str(r.get("child"))) for r in records)
    lines = []
    for record in records:
        stamp = record.get("ts")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if isinstance(stamp, int | float) else "-"
        outcome = str(record.get("outcome", "-"))
        if outcome == "restarted" and isinstance(record.get("restarts"), int):
            outcome += f" (#{record['restarts']}" + (f", after {record['delay']:g}s)" if record.get("delay") else ")")
        exit_ = record.get("exit") or ("with a sibling" if record.get("reason") == "strategy" else "-")
        lines.append(f"{when}  {str(record.get('child')).ljust(width)}  {str(record.get('reason')).ljust(10)}  "
                     f"{exit_}  -> {outcome}")
    return "\n".join(lines)


VERB = Verb("history", "show the restart history (kept across daemon restarts)",
            "read", handle, run, setup=setup)
