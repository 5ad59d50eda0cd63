"""``pid``: a child's pid (its process group), or the daemon's without a name; for scripts, as
``supervisorctl pid``.

Wire: ``{"verb": "pid", "args": {"name"?: NAME}}`` -> ``{"name", "pid"}`` (``pid`` null when not running).
CLI: ``foundationctl pid [NAME] [--json]`` prints the number; exit 1 (``not_running``) when it does not run.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Protocol

from daemon.control.cli_common import EXIT_DAEMON_ERROR, EXIT_OK, add_json, print_result
from daemon.control.verbs.base import Reply, Verb, str_arg

if TYPE_CHECKING:
    from daemon.core.tree import SupervisionTree
from ipc.control import ControlClient, Request


class Context(Protocol):
    tree: SupervisionTree


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    if "name" not in req.args:
        reply({"name": None, "pid": os.getpid()})
        return
    name = str_arg(req.args, "name")
    reply({"name": name, "pid": getattr(ctx.tree.find(name), "pid", None)})


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", nargs="?", help="the child (none: foundationd itself)")
    add_json(parser)


def run(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.request("pid", **({"name": args.name} if args.name else {}))
    if result.get("pid") is None and not getattr(args, "json", False):
        print(f"error: not_running: {args.name} has no process", file=sys.stderr)
        return EXIT_DAEMON_ERROR
    print_result(args, result, lambda: str(result["pid"]))
    return EXIT_OK


VERB = Verb("pid", "print a child's pid (none: the daemon's)", "read", handle, run, setup=setup)
