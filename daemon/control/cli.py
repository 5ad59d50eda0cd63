"""``foundationctl``: the command line client of the control socket (DESIGN 3.1, docs/protocol.md).

Parsing happens in two stages so that each verb owns its arguments::

    foundationctl [--runtime-dir DIR] VERB ARGS...
    └─ stage 1: global options and the verb ─┘ └─ stage 2: the verb's own parser ─┘

Verbs live in one table (``VERBS``): each entry names its argparse setup, an optional usage check and a
handler. Adding a verb is adding a row; ``main`` never grows an if-chain. A verb that sets
``takes_tail`` receives everything after the first ``--`` untouched (``attach NAME -- COMMAND...``), because
argparse alone cannot mix options with a trailing command that has options of its own.

Exit codes are part of the stable interface: 0 ok, 1 the daemon answered with an error, 2 usage,
3 the daemon cannot be reached. ``main`` returns them instead of calling ``sys.exit`` so tests and other
Python callers can use it directly.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import orjson

from daemon.paths import runtime_dir
from ipc.control import SOCKET_NAME, ControlClient, ControlUnreachable
from ipc.errors import ErrorCode, FoundationError

PROG = "foundationctl"
EXIT_OK = 0
EXIT_DAEMON_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

RESTART_TYPES = ("permanent", "transient", "temporary")
COMMAND_DISPLAY_MAX = 48  # a worker's command is shown in `status`, shortened past this many characters


# --------------------------------------------------------------------------------------------------------
# argparse without sys.exit


class _ParserExit(Exception):
    """Raised instead of ``sys.exit`` so that ``main`` can return argparse's status (2 on usage errors)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that prints as usual but returns control to ``main`` instead of exiting."""

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self._print_message(message, sys.stderr)
        raise _ParserExit(status)


# --------------------------------------------------------------------------------------------------------
# The verb table

Handler = Callable[[ControlClient, argparse.Namespace], int]
Setup = Callable[[argparse.ArgumentParser], None]
Check = Callable[[argparse.ArgumentParser, argparse.Namespace], None]


@dataclass(frozen=True)
class Verb:
    """One row of the verb table.

    ``setup`` adds the verb's arguments; ``check`` rejects combinations argparse cannot express (it calls
    ``parser.error``) and runs before any connection is made, so a usage error is always exit 2, daemon or
    not; ``run`` talks to the daemon and returns the exit code. With ``takes_tail`` everything after the first
    ``--`` is passed verbatim as ``args.tail``.
    """

    name: str
    help: str
    run: Handler
    setup: Setup | None = None
    check: Check | None = None
    takes_tail: bool = False
    usage: str | None = None


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the daemon's result as JSON")


def _add_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the child's name")
    _add_json(parser)


def _print_result(args: argparse.Namespace, result: Any, text: Callable[[], str]) -> None:
    """Print ``result`` as JSON under ``--json`` (for scripts), else the human ``text()``.

    ``text`` is called only when needed, so ``--json`` works even for a result the renderer does not expect.
    """
    if getattr(args, "json", False):
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        print(text())


# status


def _run_status(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.request("status")
    _print_result(args, result, lambda: render_status(result))
    return EXIT_OK


# start / stop / restart


def _lifecycle(verb: str, past: str, expected_state: str) -> Handler:
    """A handler for the three verbs that act on one child and answer ``{name, state, pid}``."""

    def run(client: ControlClient, args: argparse.Namespace) -> int:
        result = client.request(verb, name=args.name)
        _print_result(args, result, lambda: _confirm(past, result, args.name, expected_state))
        return EXIT_OK

    return run


def _confirm(past: str, result: Any, name: str, expected_state: str) -> str:
    """``restarted ticker (pid 4301)``; the state is named only when it is not the one the verb aims at."""
    res = result if isinstance(result, dict) else {}
    details = []
    if res.get("pid") is not None:
        details.append(f"pid {res['pid']}")
    state = res.get("state")
    if state is not None and state != expected_state:
        details.append(f"state {state}")
    suffix = f" ({', '.join(details)})" if details else ""
    return f"{past} {res.get('name', name)}{suffix}"


# attach / detach

_ATTACH_USAGE = (
    f"{PROG} attach NAME [--parent SUP] [--restart TYPE] [--json] (-- COMMAND... | --agent MODULE:CLASS)"
)


def _setup_attach(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the new child's name")
    parser.add_argument("--parent", metavar="SUP", default="root", help="supervisor to attach to (root)")
    parser.add_argument(
        "--restart", metavar="TYPE", choices=RESTART_TYPES, help="permanent|transient|temporary"
    )
    parser.add_argument("--agent", metavar="MODULE:CLASS", help="run a Python agent instead of a command")
    _add_json(parser)
    parser.epilog = "Everything after -- is the command, passed as is: options there belong to it."


def _check_attach(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.tail and args.agent:
        parser.error("give either -- COMMAND... or --agent MODULE:CLASS, not both")
    if not args.tail and not args.agent:
        parser.error("a command (-- COMMAND...) or --agent MODULE:CLASS is required")


def _run_attach(client: ControlClient, args: argparse.Namespace) -> int:
    spec: dict[str, Any] = {"name": args.name}
    if args.agent:
        spec["agent"] = args.agent
    else:
        spec["command"] = list(args.tail)
    if args.restart:
        spec["restart"] = args.restart
    result = client.request("attach", parent=args.parent, spec=spec)
    name = result.get("name", args.name) if isinstance(result, dict) else args.name
    _print_result(args, result, lambda: f"attached {name} to {args.parent}")
    return EXIT_OK


def _run_detach(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.request("detach", name=args.name)
    name = result.get("name", args.name) if isinstance(result, dict) else args.name
    _print_result(args, result, lambda: f"detached {name}")
    return EXIT_OK


# shutdown


def _run_shutdown(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.request("shutdown")
    _print_result(args, result, lambda: "foundationd is shutting down")
    return EXIT_OK


# send / call


def _setup_send(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the recipient agent")
    parser.add_argument("body", metavar="JSON", help="the message, a JSON value; - reads one per line of stdin")
    parser.set_defaults(verb_name="send")
    parser.add_argument("--producer", metavar="ID",
                        help="with -: number the lines 1, 2, ... under this producer id, so that running the same "
                        "input again after a failure skips what was already accepted")
    _add_json(parser)


def _run_send(client: ControlClient, args: argparse.Namespace) -> int:
    if args.body != "-":
        result = client.request("send", name=args.name, body=_json_arg(args))
        _print_result(args, result, lambda: str(result.get("id")))
        return EXIT_OK
    failed = 0
    lines = (line for line in sys.stdin if line.strip())
    bodies = ((n, _json_line(n, line)) for n, line in enumerate(lines, 1))
    valid = []

    def requests() -> Iterator[tuple[str, dict[str, Any]]]:
        nonlocal failed
        for n, body in bodies:
            if isinstance(body, ValueError):
                failed += 1
                print(f"error: bad_request: line {n}: {body}", file=sys.stderr)
                continue
            valid.append(n)
            extra = {"producer": args.producer, "seq": n} if args.producer else {}
            yield "send", {"name": args.name, "body": body, **extra}

    out = sys.stdout
    for index, result in enumerate(client.pipeline(requests())):
        if isinstance(result, FoundationError):
            failed += 1
            print(f"error: {result.code}: line {valid[index]}: {result.message}", file=sys.stderr)
        else:
            out.write(f"{result['id']}\n")
    out.flush()
    return EXIT_DAEMON_ERROR if failed else EXIT_OK


def _setup_call(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the agent to ask")
    parser.add_argument("body", metavar="JSON", help="the request, a JSON value")
    parser.set_defaults(verb_name="call")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S", help="seconds to wait (5)")
    _add_json(parser)


def _run_call(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.request("call", name=args.name, body=_json_arg(args), timeout=args.timeout)
    reply = result.get("reply") if isinstance(result, dict) else result
    if getattr(args, "json", False):
        _print_result(args, result, str)
    else:
        print(orjson.dumps(reply).decode())
    return EXIT_OK


def _setup_logs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the child")
    parser.add_argument("-n", "--lines", type=int, default=50, metavar="N", help="how many recent lines (50)")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until interrupted")
    _add_json(parser)


def _run_logs(client: ControlClient, args: argparse.Namespace) -> int:
    if args.lines < 0:
        raise FoundationError(ErrorCode.BAD_REQUEST, "-n must be >= 0")
    if not args.follow:
        result = client.request("logs", name=args.name, lines=args.lines)
        _print_result(args, result, lambda: "\n".join(entry["line"] for entry in result["lines"]))
        return EXIT_OK
    client.settimeout(None)  # following waits for output as long as it takes
    for result in client.stream("logs", name=args.name, lines=args.lines, follow=True):
        for entry in result["lines"]:
            print(orjson.dumps(entry).decode() if getattr(args, "json", False) else entry["line"], flush=True)
    return EXIT_OK


def _run_reload(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.request("reload")

    def text() -> str:
        parts = [f"{what} {', '.join(names)}" for what, names in result.items() if names]
        return "reloaded: " + ("; ".join(parts) if parts else "no changes")

    _print_result(args, result, text)
    return EXIT_OK


def _run_state(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.request("state", name=args.name)
    _print_result(args, result, lambda: orjson.dumps(result.get("state")).decode())
    return EXIT_OK


def _check_json(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A message that is not JSON is a usage error (exit 2), caught before the daemon is contacted."""
    if args.body == "-" and args.verb_name == "send":
        return
    try:
        args.parsed_body = orjson.loads(args.body)
    except orjson.JSONDecodeError as exc:
        parser.error(f"JSON argument is not valid JSON: {exc}")


def _json_arg(args: argparse.Namespace) -> Any:
    return args.parsed_body


def _json_line(n: int, line: str) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return ValueError(f"not valid JSON: {exc}")


VERBS: dict[str, Verb] = {
    verb.name: verb
    for verb in (
        Verb("status", "show the daemon and its supervision tree", _run_status, setup=_add_json),
        Verb("start", "start a stopped child", _lifecycle("start", "started", "running"), setup=_add_name),
        Verb(
            "stop",
            "stop a child (it stays stopped)",
            _lifecycle("stop", "stopped", "stopped"),
            setup=_add_name,
        ),
        Verb(
            "restart",
            "stop a child and start it again",
            _lifecycle("restart", "restarted", "running"),
            setup=_add_name,
        ),
        Verb(
            "attach",
            "add a child to a running supervisor",
            _run_attach,
            setup=_setup_attach,
            check=_check_attach,
            takes_tail=True,
            usage=_ATTACH_USAGE,
        ),
        Verb("detach", "stop a child and remove it from the tree", _run_detach, setup=_add_name),
        Verb("shutdown", "stop every child and the daemon", _run_shutdown, setup=_add_json),
        Verb("send", "cast a JSON message to an agent; prints its id once durably accepted", _run_send,
             setup=_setup_send, check=_check_json),
        Verb("call", "ask an agent and print its reply", _run_call, setup=_setup_call, check=_check_json),
        Verb("state", "print an agent's persisted state", _run_state, setup=_add_name),
        Verb("reload", "re-read the config and apply the difference", _run_reload, setup=_add_json),
        Verb("logs", "show a child's recent output", _run_logs, setup=_setup_logs),
    )
}


# --------------------------------------------------------------------------------------------------------
# Rendering `status`

Row = tuple[str, str, list[str]]  # (tree prefix + name, node type, the remaining cells)


def render_status(result: dict[str, Any]) -> str:
    """Render a ``status`` result (DESIGN 3.3) as a header line and an aligned tree.

    A pure function so the layout is tested without a daemon. Missing or null fields print as ``-``:
    a stopped worker has no pid and no uptime, and a newer daemon may omit or add keys.
    """
    daemon = result.get("daemon") or {}
    header = (
        f"foundationd pid {_dash(daemon.get('pid'))}, version {_dash(daemon.get('version'))}, "
        f"up {format_duration(daemon.get('uptime_s'))}{_zygote(daemon.get('zygote'))}"
    )
    rows: list[Row] = []
    tree = result.get("tree")
    if isinstance(tree, dict):
        _collect(tree, "", "", rows)
    name_width = max((len(label) for label, _, _ in rows), default=0)
    widths: dict[str, list[int]] = {}
    for _, kind, cells in rows:
        kind_widths = widths.setdefault(kind, [])
        for i, cell in enumerate(cells):
            if i == len(kind_widths):
                kind_widths.append(0)
            kind_widths[i] = max(kind_widths[i], len(cell))
    lines = [header]
    for label, kind, cells in rows:
        padded = [cell.ljust(width) for cell, width in zip(cells, widths[kind], strict=False)]
        lines.append("  ".join([label.ljust(name_width), *padded]).rstrip())
    return "\n".join(lines)


def _collect(node: dict[str, Any], own_prefix: str, child_indent: str, rows: list[Row]) -> None:
    """Depth-first: one row per node; workers and supervisors are aligned among their own kind."""
    label = own_prefix + str(node.get("name", "?"))
    if node.get("type") == "supervisor":
        cells = [
            _dash(node.get("strategy")),
            _dash(node.get("state")),
            f"restarts {_dash(node.get('restarts'))} ({_dash(node.get('intensity'))} in "
            f"{_period(node.get('period'))})",
        ]
        rows.append((label, "supervisor", cells))
        children = [child for child in node.get("children") or [] if isinstance(child, dict)]
        for i, child in enumerate(children):
            last = i == len(children) - 1
            branch, indent = ("└─ ", "   ") if last else ("├─ ", "│  ")
            _collect(child, child_indent + branch, child_indent + indent, rows)
    else:
        cells = [
            _dash(node.get("state")),
            f"pid {_dash(node.get('pid'))}",
            f"up {format_duration(node.get('uptime_s'))}",
            f"restarts {_dash(node.get('restarts'))}",
            _dash(node.get("restart")),
            _what(node) + _reported(node),
        ]
        rows.append((label, "worker", cells))


def _reported(node: dict[str, Any]) -> str:
    """What a notify child said of itself (STATUS=, ERRNO=, EXIT_STATUS=), after its command."""
    said = [f'"{node["status"]}"'] if isinstance(node.get("status"), str) else []
    said += [f"{key} {node[key]}" for key in ("errno", "exit_status") if isinstance(node.get(key), int)]
    return "  " + ", ".join(said) if said else ""


def _zygote(zygote: object) -> str:
    """The agent fork server, when it runs: its state, pid and spares (agents-to-be forked ahead of time)."""
    if not isinstance(zygote, dict) or zygote.get("state") not in ("booting", "ready"):
        return ""
    spares = zygote.get("spares") if isinstance(zygote.get("spares"), list) else []
    return f"; zygote {zygote['state']} (pid {_dash(zygote.get('pid'))}, {len(spares)} spare{'s' * (len(spares) != 1)})"


def _what(node: dict[str, Any]) -> str:
    """What a worker runs: its agent class or its command line, shortened so rows stay on one line."""
    if node.get("agent"):
        text = f"agent {node['agent']}"
    elif node.get("command"):
        command = node["command"]
        text = shlex.join(str(part) for part in command) if isinstance(command, list) else str(command)
    else:
        return ""
    if len(text) > COMMAND_DISPLAY_MAX:
        text = text[: COMMAND_DISPLAY_MAX - 1] + "…"
    return text


def format_duration(seconds: float | None) -> str:
    """``12s``, ``3m12s``, ``2h05m``, ``3d04h``: two units are enough to read a tree at a glance."""
    if seconds is None or not isinstance(seconds, int | float):
        return "-"
    total = max(int(seconds), 0)
    days, rem = divmod(total, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _period(value: Any) -> str:
    return f"{value:g}s" if isinstance(value, int | float) else "-"


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


# --------------------------------------------------------------------------------------------------------
# Entry point


def _global_parser() -> _Parser:
    verbs = "\n".join(f"  {verb.name:<10} {verb.help}" for verb in VERBS.values())
    parser = _Parser(
        prog=PROG,
        usage="%(prog)s [-h] [--runtime-dir DIR] VERB [ARGS...]",
        description="Control a running foundationd over its control socket.",
        epilog=f"verbs:\n{verbs}\n\n'{PROG} VERB --help' shows a verb's arguments.\n"
        "exit codes: 0 ok, 1 the daemon answered with an error, 2 usage, 3 the daemon cannot be reached.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--runtime-dir",
        metavar="DIR",
        help="the daemon's runtime directory (default: FOUNDATION_RUNTIME_DIR, RUNTIME_DIRECTORY, "
        "$XDG_RUNTIME_DIR/foundation, /tmp/foundation-UID)",
    )
    parser.add_argument("verb", metavar="VERB", choices=list(VERBS), help="one of: " + ", ".join(VERBS))
    rest = parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    rest.required = False  # Python 3.11 marks a REMAINDER positional required; a verb may have no args
    return parser


def _verb_parser(verb: Verb) -> _Parser:
    parser = _Parser(prog=f"{PROG} {verb.name}", description=verb.help, usage=verb.usage)
    if verb.setup is not None:
        verb.setup(parser)
    return parser


def parse_args(argv: list[str]) -> tuple[Verb, argparse.Namespace]:
    """Both parsing stages; raises ``_ParserExit`` on usage errors and ``--help``."""
    top = _global_parser().parse_args(argv)
    verb = VERBS[top.verb]
    rest: list[str] = top.rest
    tail: list[str] = []
    if verb.takes_tail and "--" in rest:
        split = rest.index("--")
        rest, tail = rest[:split], rest[split + 1 :]
    parser = _verb_parser(verb)
    args = parser.parse_args(rest)
    args.runtime_dir = top.runtime_dir
    args.tail = tail
    if verb.check is not None:
        verb.check(parser, args)
    return verb, args


def main(argv: list[str] | None = None) -> int:
    """Run one ``foundationctl`` invocation and return its exit code (the console script exits with it)."""
    try:
        verb, args = parse_args(sys.argv[1:] if argv is None else list(argv))
    except _ParserExit as exc:
        return exc.status
    path = runtime_dir(args.runtime_dir) / SOCKET_NAME
    try:
        with ControlClient(str(path)) as client:
            return verb.run(client, args)
    except FoundationError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_DAEMON_ERROR
    except ControlUnreachable as exc:
        print(f"error: cannot reach foundationd at {path}: {_reason(exc)}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except orjson.JSONDecodeError as exc:
        # Something answered on the socket, but not in our protocol: as unusable as no daemon at all.
        print(f"error: cannot reach foundationd at {path}: reply is not JSON: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return 130  # the shell's convention for SIGINT; a traceback would only hide the reason


def _reason(exc: ControlUnreachable) -> str:
    """The OS's own words (``No such file or directory``); the client's message would repeat the path."""
    cause = exc.__cause__
    if isinstance(cause, OSError):
        return cause.strerror or str(cause) or type(cause).__name__
    return str(exc)


if __name__ == "__main__":
    raise SystemExit(main())
