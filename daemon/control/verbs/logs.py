"""``logs``: a child's recent output (also ``(zygote)`` and ``(guardian)``); with ``follow``, then every new line.
For a supervisor (and without a name: the root), the output of every worker under it, merged in time order, each
line prefixed with its child's name (``ticker | tick 3``).

Wire: ``{"verb": "logs", "args": {"name": NAME, "lines": N, "follow": bool}}`` -> ``{"name", "lines": [{"t",
"line"}], "more": bool}``, then with ``follow`` one more reply per batch of new lines.
CLI: ``foundationctl logs [NAME] [-n N] [-f] [--json]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from daemon.control.cli_common import EXIT_OK, add_json, print_result
from daemon.control.verbs.base import Reply, Verb, str_arg

if TYPE_CHECKING:
    from daemon.core.tree import SupervisionTree
from ipc.control import ControlClient, Request
from ipc.errors import ErrorCode, FoundationError


class Rings(Protocol):
    def tail(self, name: str, count: int) -> list[tuple[float, str]]: ...
    def follow(self, name: str, callback: Callable[[list[str]], bool]) -> None: ...


class Context(Protocol):
    tree: SupervisionTree
    logs: Rings


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    from daemon.core.tree import Supervisor, workers_of  # (daemon side only: foundationctl starts fast)
    from daemon.shell.forkserver import NAME as ZYGOTE_NAME
    from daemon.shell.logs import DAEMON_NAME
    from daemon.shell.process import GUARDIAN_NAME

    name = str_arg(req.args, "name") if "name" in req.args else ctx.tree.root.name
    node = ctx.tree.find_quiet(name)
    if node is None and name not in (ZYGOTE_NAME, GUARDIAN_NAME, DAEMON_NAME):
        raise FoundationError(ErrorCode.NO_SUCH_CHILD, f"no child named {name!r}")
    count = req.args.get("lines", 50)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise FoundationError(ErrorCode.BAD_REQUEST, "'lines' must be a non-negative integer")
    if isinstance(node, Supervisor):
        _merged(ctx, name, [w.name for w in workers_of(node)], count, follow=bool(req.args.get("follow")), reply=reply)
        return
    tail = [{"t": t, "line": line} for t, line in ctx.logs.tail(name, count)]
    alive = reply({"name": name, "lines": tail, "more": bool(req.args.get("follow"))})
    if req.args.get("follow") and alive is not False:
        ctx.logs.follow(name, lambda lines: reply(
            {"name": name, "lines": [{"t": time.time(), "line": x} for x in lines]}) is not False)


def _merged(ctx: Context, name: str, children: list[str], count: int, *, follow: bool, reply: Reply) -> None:
    """The last ``count`` lines of all ``children`` together, oldest first, each with its child's name."""
    lines = sorted((t, child, line) for child in children for t, line in ctx.logs.tail(child, count))
    tail = [{"t": t, "child": child, "line": f"{child} | {line}"} for t, child, line in lines[-count:] if count]
    alive = reply({"name": name, "lines": tail, "more": follow})
    if not follow or alive is False:
        return
    for child in children:
        ctx.logs.follow(child, lambda new, c=child: reply(
            {"name": name, "lines": [{"t": time.time(), "child": c, "line": f"{c} | {x}"} for x in new]}) is not False)


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", nargs="?",
                        help="the child; a supervisor (or none: the whole tree) merges its children's output")
    parser.add_argument("-n", "--lines", type=int, default=50, metavar="N", help="how many recent lines (50)")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until interrupted")
    parser.add_argument("-t", "--timestamps", action="store_true", help="prefix each line with its local time")
    add_json(parser)


def run(client: ControlClient, args: argparse.Namespace) -> int:
    if args.lines < 0:
        raise FoundationError(ErrorCode.BAD_REQUEST, "-n must be >= 0")
    if not args.follow:
        result = client.request("logs", lines=args.lines, **_name(args))
        print_result(args, result, lambda: "\n".join(_text(entry, args) for entry in result["lines"]))
        return EXIT_OK
    client.settimeout(None)  # following waits for output as long as it takes
    for result in client.stream("logs", lines=args.lines, follow=True, **_name(args)):
        for entry in result["lines"]:
            print(orjson.dumps(entry).decode() if getattr(args, "json", False) else _text(entry, args), flush=True)
    return EXIT_OK


def _text(entry: dict[str, Any], args: argparse.Namespace) -> str:
    stamp = entry.get("t") if args.timestamps else None
    if stamp is None:
        return str(entry["line"])
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) + f".{int(stamp % 1 * 1000):03d} {entry['line']}"


def _name(args: argparse.Namespace) -> dict[str, str]:
    return {"name": args.name} if args.name is not None else {}


VERB = Verb("logs", "show a child's recent output (a supervisor's: its children's, merged)", "read", handle, run,
            setup=setup)
