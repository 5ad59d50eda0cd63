"""``foundationctl``: the command line client of the control socket (DESIGN 3.1, docs/protocol.md).

Parsing happens in two stages so that each verb owns its arguments::

    foundationctl [--runtime-dir DIR] VERB ARGS...
    └─ stage 1: global options and the verb ─┘ └─ stage 2: the verb's own parser ─┘

Verbs live in ``daemon/control/verbs/``, one module each (its argparse setup, an optional usage check, the
handler and the rendering); ``VERBS`` is their registry. Adding a verb is adding a module; ``main`` never grows
an if-chain. A verb that sets
``takes_tail`` receives everything after the first ``--`` untouched (``attach NAME -- COMMAND...``), because
argparse alone cannot mix options with a trailing command that has options of its own.

Exit codes are part of the stable interface: 0 ok, 1 the daemon answered with an error, 2 usage,
3 the daemon cannot be reached. ``main`` returns them instead of calling ``sys.exit`` so tests and other
Python callers can use it directly.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import orjson

from daemon.control import completion
from daemon.control.cli_common import (
    EXIT_DAEMON_ERROR,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    PROG,
    Parser,
    ParserExit,
)
from daemon.control.verbs import VERBS
from daemon.control.verbs.base import Verb
from daemon.control.verbs.status import format_duration, render_status
from daemon.paths import client_runtime_dirs
from ipc.control import SOCKET_NAME, ControlClient, ControlUnreachable
from ipc.errors import FoundationError

__all__ = ["EXIT_DAEMON_ERROR", "EXIT_OK", "EXIT_UNREACHABLE", "EXIT_USAGE", "VERBS", "format_duration", "main",
           "parse_args", "render_status"]


def _global_parser() -> Parser:
    verbs = "\n".join(f"  {verb.name:<10} {verb.help}" for verb in VERBS.values())
    verbs += f"\n  {'completion':<10} print a shell completion script (bash or zsh)"
    parser = Parser(
        prog=PROG,
        usage="%(prog)s [-h] [--runtime-dir DIR | --config FILE] VERB [ARGS...]",
        description="Control a running foundationd over its control socket.",
        epilog=f"verbs:\n{verbs}\n\n'{PROG} VERB --help' shows a verb's arguments.\n"
        "exit codes: 0 ok, 1 the daemon answered with an error, 2 usage, 3 the daemon cannot be reached.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--runtime-dir",
        metavar="DIR",
        help="the daemon's runtime directory (default: FOUNDATION_RUNTIME_DIR, RUNTIME_DIRECTORY, else the first "
        "with a control socket of: --config's runtime_dir, $XDG_RUNTIME_DIR/foundation or /tmp/foundation-UID, "
        "/run/foundation)",
    )
    parser.add_argument("--config", metavar="FILE", help="foundationd's config: use its [daemon] runtime_dir")
    parser.add_argument("verb", metavar="VERB", choices=list(VERBS), help="one of: " + ", ".join(VERBS))
    rest = parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    rest.required = False  # Python 3.11 marks a REMAINDER positional required; a verb may have no args
    return parser


def _verb_parser(verb: Verb) -> Parser:
    parser = Parser(prog=f"{PROG} {verb.name}", description=verb.help, usage=verb.usage)
    if verb.setup is not None:
        verb.setup(parser)
    return parser


def parse_args(argv: list[str]) -> tuple[Verb, argparse.Namespace]:
    """Both parsing stages; raises ``ParserExit`` on usage errors and ``--help``."""
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
    args.config = top.config
    args.tail = tail
    if verb.check is not None:
        verb.check(parser, args)
    return verb, args


def main(argv: list[str] | None = None) -> int:
    """Run one ``foundationctl`` invocation and return its exit code (the console script exits with it)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["completion"]:  # local: prints a script, needs no daemon
        return _completion(argv[1:])
    try:
        verb, args = parse_args(argv)
    except ParserExit as exc:
        return exc.status
    if verb.local is not None:  # e.g. migrate emergency-rollback --offline: works on the state directory
        try:
            done = verb.local(args)
        except FoundationError as exc:
            print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
            return EXIT_DAEMON_ERROR
        if done is not None:
            return done
    path = _socket_path(args)
    try:
        with ControlClient(str(path)) as client:
            return verb.run(client, args)
    except FoundationError as exc:
        if getattr(args, "json", False):  # the one error shape (DESIGN 3.7), for scripts, on standard output
            print(orjson.dumps({"error": exc.to_wire()}).decode())
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_DAEMON_ERROR
    except ControlUnreachable as exc:
        if isinstance(exc.__cause__, PermissionError):  # the socket's mode refused us: the daemon runs, we may not
            print(f"error: permission_denied: uid {os.getuid()} may not use {path}: allowed are root, the daemon's "
                  "user and, for read verbs, members of its control_group", file=sys.stderr)
            return EXIT_DAEMON_ERROR
        print(f"error: cannot reach foundationd at {path}: {_reason(exc)}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except orjson.JSONDecodeError as exc:
        # Something answered on the socket, but not in our protocol: as unusable as no daemon at all.
        print(f"error: cannot reach foundationd at {path}: reply is not JSON: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return 130  # the shell's convention for SIGINT; a traceback would only hide the reason


def _completion(argv: list[str]) -> int:
    parser = Parser(prog=f"{PROG} completion", description="print a shell completion script")
    completion.setup(parser)
    try:
        args = parser.parse_args(argv)
    except ParserExit as exc:
        return exc.status
    print(completion.script(args.shell, VERBS), end="")
    return EXIT_OK


def _socket_path(args: argparse.Namespace) -> Path:
    """The first candidate directory whose control socket exists (else the first, for the error message)."""
    config_dir = None
    if args.config:
        from daemon.config import ConfigError, load_config  # (only with --config: foundationctl starts fast)

        try:
            config_dir = load_config(args.config).runtime_dir
        except (ConfigError, OSError) as exc:
            print(f"warning: cannot read {args.config}: {exc}", file=sys.stderr)
    candidates = [d / SOCKET_NAME for d in client_runtime_dirs(args.runtime_dir, config_dir)]
    return next((p for p in candidates if _present(p)), candidates[0])


def _present(path: Path) -> bool:
    try:
        return path.exists()
    except PermissionError:  # there, but not ours to reach: connecting says so (permission_denied)
        return True


def _reason(exc: ControlUnreachable) -> str:
    """The OS's own words (``No such file or directory``); the client's message would repeat the path."""
    cause = exc.__cause__
    if isinstance(cause, OSError):
        return cause.strerror or str(cause) or type(cause).__name__
    return str(exc)


if __name__ == "__main__":
    raise SystemExit(main())
