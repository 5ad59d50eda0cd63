"""``logs``: a child's recent output (also ``(zygote)`` and ``(guardian)``); with ``follow``, then every new line.

Wire: ``{"verb": "logs", "args": {"name": NAME, "lines": N, "follow": bool}}`` -> ``{"name", "lines": [{"t",
"line"}], "more": bool}``, then with ``follow`` one more reply per batch of new lines.
CLI: ``foundationctl logs NAME [-n N] [-f] [--json]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Protocol

import orjson

from daemon.control.cli_common import EXIT_OK, add_json, print_result
from daemon.control.verbs.base import Reply, Verb, str_arg
from daemon.core.tree import SupervisionTree
from daemon.shell.forkserver import NAME as ZYGOTE_NAME
from daemon.shell.process import GUARDIAN_NAME
from ipc.control import ControlClient, Request
from ipc.errors import ErrorCode, FoundationError


class Rings(Protocol):
    def tail(self, name: str, count: int) -> list[tuple[float, str]]: ...
    def follow(self, name: str, callback: Callable[[list[str]], bool]) -> None: ...


class Context(Protocol):
    tree: SupervisionTree
    logs: Rings


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    name = str_arg(req.args, "name")
    if ctx.tree.find_quiet(name) is None and name not in (ZYGOTE_NAME, GUARDIAN_NAME):
        raise FoundationError(ErrorCode.NO_SUCH_CHILD, f"no child named {name!r}")
    count = req.args.get("lines", 50)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise FoundationError(ErrorCode.BAD_REQUEST, "'lines' must be a non-negative integer")
    tail = [{"t": t, "line": line} for t, line in ctx.logs.tail(name, count)]
    alive = reply({"name": name, "lines": tail, "more": bool(req.args.get("follow"))})
    if req.args.get("follow") and alive is not False:
        ctx.logs.follow(
            name, lambda lines: reply({"name": name, "lines": [{"line": x} for x in lines]}) is not False
        )


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the child")
    parser.add_argument("-n", "--lines", type=int, default=50, metavar="N", help="how many recent lines (50)")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until interrupted")
    add_json(parser)


def run(client: ControlClient, args: argparse.Namespace) -> int:
    if args.lines < 0:
        raise FoundationError(ErrorCode.BAD_REQUEST, "-n must be >= 0")
    if not args.follow:
        result = client.request("logs", name=args.name, lines=args.lines)
        print_result(args, result, lambda: "\n".join(entry["line"] for entry in result["lines"]))
        return EXIT_OK
    client.settimeout(None)  # following waits for output as long as it takes
    for result in client.stream("logs", name=args.name, lines=args.lines, follow=True):
        for entry in result["lines"]:
            print(orjson.dumps(entry).decode() if getattr(args, "json", False) else entry["line"], flush=True)
    return EXIT_OK


VERB = Verb("logs", "show a child's recent output", "read", handle, run, setup=setup)
