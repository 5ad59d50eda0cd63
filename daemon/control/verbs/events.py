"""``events``: the daemon's event stream (DESIGN 3.9): what the supervision core decided (``child_started``,
``child_exited``, ``child_restarted``, ``start_failed``, ``child_parked``, ``intensity_exceeded``,
``supervisor_failed``, ``halted``) and what services said (``message_rejected``, ...), the last 10,000 kept in memory;
with ``follow``, then every new one as it happens.

Wire: ``{"verb": "events", "args": {"lines": N, "follow": bool, "name"?: NAME, "types"?: [TYPE, ...]}}`` ->
``{"events": [{"seq", "ts", "type", ...}], "more": bool}``, then with ``follow`` one more reply per batch.
CLI: ``foundationctl events [NAME] [-n N] [--type TYPE]... [-f] [--json]`` (``--json``: one JSON object a line).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from daemon.control.cli_common import EXIT_OK, add_json
from daemon.control.verbs.base import Reply, Verb, count_arg, str_arg
from ipc.control import ControlClient, Request
from ipc.errors import ErrorCode, FoundationError

if TYPE_CHECKING:
    from daemon.services.observability import Observability


class Context(Protocol):
    obs: Observability


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    from daemon.services.events import matcher

    name = str_arg(req.args, "name") if "name" in req.args else None
    count = count_arg(req.args, "lines", 50)
    types = req.args.get("types", [])
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise FoundationError(ErrorCode.BAD_REQUEST, "'types' must be a list of strings")
    match = matcher(name, types)
    follow = bool(req.args.get("follow"))
    stream = ctx.obs.stream
    alive = reply({"events": stream.tail(count, match), "more": follow})
    if follow and alive is not False:
        def follower(events: list[dict[str, Any]]) -> bool:
            chosen = events if match is None else [e for e in events if match(e)]
            return not chosen or reply({"events": chosen}) is not False

        stream.follow(follower)


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", nargs="?", help="only events about this child (or supervisor)")
    parser.add_argument("-n", "--lines", type=int, default=50, metavar="N", help="how many recent events (50)")
    parser.add_argument("-t", "--type", action="append", default=[], metavar="TYPE", dest="types",
                        help="only events of this type (may be repeated)")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new events until interrupted")
    add_json(parser)


def run(client: ControlClient, args: argparse.Namespace) -> int:
    from daemon.services.events import render

    if args.lines < 0:
        raise FoundationError(ErrorCode.BAD_REQUEST, "-n must be >= 0")
    query: dict[str, Any] = {"lines": args.lines, "types": args.types}
    if args.name is not None:
        query["name"] = args.name

    def show(events: list[dict[str, Any]]) -> None:
        for event in events:
            print(orjson.dumps(event).decode() if args.json else render(event), flush=True)

    if not args.follow:
        show(client.request("events", **query)["events"])
        return EXIT_OK
    client.settimeout(None)  # following waits for events as long as it takes
    for result in client.stream("events", follow=True, **query):
        show(result["events"])
    return EXIT_OK


VERB = Verb("events", "show the event stream: starts, exits, restarts, escalations, ...", "read",
            handle, run, setup=setup)
