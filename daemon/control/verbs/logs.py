"""``logs``: a child's recent output (also ``(zygote)`` and ``(guardian)``); with ``follow``, then every new line.
For a supervisor (and without a name: the root), the output of every worker under it, merged in time order, each
line prefixed with its child's name (``ticker | tick 3``).

Each line says the stream it came from: ``stdout`` or ``stderr`` (a child's two pipes), or ``daemon`` for what
foundationd wrote there itself (the ``-- started``/``-- exited`` markers, its own log in ``(foundationd)``). The CLI
marks a stderr line with ``!``: in front of it (``! Traceback ...``), or in place of ``|`` after a child's name
(``ticker ! warning``). ``stream`` keeps the lines of one stream only, and the markers (which run a line is from).
Lines of the two pipes are in the order foundationd read them: a child's stdout and stderr lines written within
the same instant may come out in another order than the child wrote them (as in the journal).

Wire: ``{"verb": "logs", "args": {"name": NAME, "lines": N, "follow": bool, "stream": "stdout"|"stderr"}}`` ->
``{"name", "lines": [{"t", "stream", "line"}], "more": bool}`` (merged: also ``"child"``, and ``"line"`` has its
name in front), then with ``follow`` one more reply per batch of new lines.
CLI: ``foundationctl logs [NAME] [-n N] [-f] [-t] [--stream stdout|stderr] [--json]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from daemon.control.cli_common import EXIT_OK, add_json, print_result
from daemon.control.verbs.base import Reply, Verb, count_arg, str_arg

if TYPE_CHECKING:
    from daemon.core.tree import SupervisionTree
from ipc.control import ControlClient, Request
from ipc.errors import ErrorCode, FoundationError

STREAMS = ("stdout", "stderr")  # daemon/shell/logs.py's STREAMS (not imported: foundationctl starts fast)
SEPARATORS = {"stderr": " ! "}  # after a child's name; stdout's and the markers': " | "


class Rings(Protocol):
    def tail(self, name: str, count: int, streams: Collection[str] | None = None) -> list[tuple[float, str, str]]: ...
    def follow(self, name: str, callback: Callable[[str, list[str]], bool]) -> None: ...


class Context(Protocol):
    tree: SupervisionTree
    logs: Rings


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    from daemon.core.tree import Supervisor, workers_of  # (daemon side only: foundationctl starts fast)
    from daemon.shell.forkserver import NAME as ZYGOTE_NAME
    from daemon.shell.logs import DAEMON, DAEMON_NAME
    from daemon.shell.process import GUARDIAN_NAME

    name = str_arg(req.args, "name") if "name" in req.args else ctx.tree.root.name
    node = ctx.tree.find_quiet(name)
    if node is None and name not in (ZYGOTE_NAME, GUARDIAN_NAME, DAEMON_NAME):
        raise FoundationError(ErrorCode.NO_SUCH_CHILD, f"no child named {name!r}")
    count = count_arg(req.args, "lines", 50)
    stream = req.args.get("stream")
    if stream is not None and stream not in STREAMS:
        raise FoundationError(ErrorCode.BAD_REQUEST, f"'stream' must be one of {', '.join(STREAMS)}")
    streams = None if stream is None else (stream, DAEMON)
    # A supervisor's view merges its workers' rings, each line with its child's name; a worker's is its own ring.
    sources = [(w.name, w.name) for w in workers_of(node)] if isinstance(node, Supervisor) else [(name, None)]
    tail = [_entry(label, *line) for ring, label in sources for line in ctx.logs.tail(ring, count, streams)]
    tail.sort(key=lambda entry: entry["t"])  # oldest first; stable: a ring's lines of one instant keep their order
    tail = tail[-count:] if count else []
    follow = bool(req.args.get("follow"))
    if reply({"name": name, "lines": tail, "more": follow}) is False or not follow:
        return
    for ring, label in sources:
        def send(s: str, new: list[str], label: str | None = label) -> bool:
            if streams is not None and s not in streams:
                return True  # a stream not asked for: nothing to send, still following
            now = time.time()
            return reply({"name": name, "lines": [_entry(label, now, s, line) for line in new]}) is not False

        ctx.logs.follow(ring, send)


def _entry(child: str | None, t: float, stream: str, line: str) -> dict[str, Any]:
    """One line as the reply has it: a worker's own, or (``child`` named) in a merged view with the name in front."""
    if child is None:
        return {"t": t, "stream": stream, "line": line}
    return {"t": t, "child": child, "stream": stream, "line": f"{child}{SEPARATORS.get(stream, ' | ')}{line}"}


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", nargs="?",
                        help="the child; a supervisor (or none: the whole tree) merges its children's output")
    parser.add_argument("-n", "--lines", type=int, default=50, metavar="N", help="how many recent lines (50)")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until interrupted")
    parser.add_argument("-t", "--timestamps", action="store_true", help="prefix each line with its local time")
    parser.add_argument("--stream", choices=STREAMS,
                        help="only what the child wrote to this stream (and the start and exit markers); "
                        "stderr lines are marked with '!'")
    add_json(parser)


def run(client: ControlClient, args: argparse.Namespace) -> int:
    if args.lines < 0:
        raise FoundationError(ErrorCode.BAD_REQUEST, "-n must be >= 0")
    if not args.follow:
        result = client.request("logs", lines=args.lines, **_name(args), **_stream(args))
        print_result(args, result, lambda: "\n".join(_text(entry, args) for entry in result["lines"]))
        return EXIT_OK
    client.settimeout(None)  # following waits for output as long as it takes
    for result in client.stream("logs", lines=args.lines, follow=True, **_name(args), **_stream(args)):
        for entry in result["lines"]:
            print(orjson.dumps(entry).decode() if getattr(args, "json", False) else _text(entry, args), flush=True)
    return EXIT_OK


def _text(entry: dict[str, Any], args: argparse.Namespace) -> str:
    line = str(entry["line"])
    if entry.get("stream") == "stderr" and "child" not in entry:  # (a merged line has its mark after the name)
        line = "! " + line
    stamp = entry.get("t") if args.timestamps else None
    if stamp is None:
        return line
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) + f".{int(stamp % 1 * 1000):03d} {line}"


def _name(args: argparse.Namespace) -> dict[str, str]:
    return {"name": args.name} if args.name is not None else {}


def _stream(args: argparse.Namespace) -> dict[str, str]:
    return {"stream": args.stream} if args.stream is not None else {}


VERB = Verb("logs", "show a child's recent output (a supervisor's: its children's, merged)", "read", handle, run,
            setup=setup)
