"""``shutdown``: stop every child (reverse start order) and the daemon, which exits 0.

Wire: ``{"verb": "shutdown"}`` -> ``{"stopping": true}`` at once. CLI: ``foundationctl shutdown [--wait] [--json]``;
with ``--wait`` it returns once foundationd has stopped every child and closed its socket (as it exits).
"""

from __future__ import annotations

import argparse
from typing import Protocol

from daemon.control.cli_common import EXIT_OK, add_json, print_result
from daemon.control.verbs.base import Reply, Verb
from ipc.control import ControlClient, Request


class Context(Protocol):
    def shutdown_soon(self) -> None: ...


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    reply({"stopping": True})
    ctx.shutdown_soon()


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true", help="return once every child has stopped and the daemon exits")
    add_json(parser)


def run(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.request("shutdown")
    if args.wait:
        client.wait_closed()
        print_result(args, result, lambda: "foundationd has shut down")
        return EXIT_OK
    print_result(args, result, lambda: "foundationd is shutting down")
    return EXIT_OK


VERB = Verb("shutdown", "stop every child and the daemon", "write", handle, run, setup=setup)
