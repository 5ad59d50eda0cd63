"""What every verb's command-line half shares: exit codes, an argparse that returns instead of exiting, and the
``--json``-or-text printing rule. The verbs (``daemon/control/verbs/``) and ``foundationctl`` import it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import orjson

PROG = "foundationctl"
EXIT_OK = 0
EXIT_DAEMON_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class ParserExit(Exception):
    """Raised instead of ``sys.exit`` so that ``main`` can return argparse's status (2 on usage errors)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that prints as usual but returns control to ``main`` instead of exiting."""

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self._print_message(message, sys.stderr)
        raise ParserExit(status)


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the daemon's result as JSON")


def add_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the child's name")
    add_json(parser)


def print_result(args: argparse.Namespace, result: Any, text: Callable[[], str]) -> None:
    """Print ``result`` as JSON under ``--json`` (for scripts), else the human ``text()``.

    ``text`` is called only when needed, so ``--json`` works even for a result the renderer does not expect.
    """
    if getattr(args, "json", False):
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        print(text())


def check_json(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A message that is not JSON is a usage error (exit 2), caught before the daemon is contacted."""
    if args.body == "-" and args.verb_name == "send":
        return
    try:
        args.parsed_body = orjson.loads(args.body)
    except orjson.JSONDecodeError as exc:
        parser.error(f"JSON argument is not valid JSON: {exc}")
