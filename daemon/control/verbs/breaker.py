"""``breaker``: an operator's hand on one circuit breaker. ``open`` trips it now (half-open after its ``open_for``),
``isolate`` holds it open until ``close`` or ``reset``, ``close`` closes it with an empty window, ``reset`` also
forgets its counts. Agents learn of the change at once (it is pushed); a ``breaker_changed`` event is published.
A breaker that no agent has used yet is made by this verb (isolating a dependency before anyone calls it).

Wire: ``{"verb": "breaker", "args": {"name": NAME, "op": "open"|"close"|"isolate"|"reset"}}`` -> the breaker as
``breakers`` shows it. CLI: ``foundationctl breaker NAME (open|close|isolate|reset) [--json]``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Protocol

from daemon.control.cli_common import EXIT_OK, add_json, print_result
from daemon.control.verbs.base import Reply, Verb, str_arg
from ipc.control import ControlClient, Request

if TYPE_CHECKING:
    from daemon.services.resilience import Resilience

OPS = ("open", "close", "isolate", "reset")


class Context(Protocol):
    resilience: Resilience


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    reply(ctx.resilience.operate(str_arg(req.args, "name"), str_arg(req.args, "op")))


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the breaker (the dependency it guards)")
    parser.add_argument("op", choices=OPS, help="open: trip now; isolate: hold open; close; reset")
    add_json(parser)


def run(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.request("breaker", name=args.name, op=args.op)
    print_result(args, result, lambda: f"breaker {result['name']} is {str(result['state']).replace('_', '-')}")
    return EXIT_OK


VERB = Verb("breaker", "open, close, isolate or reset a circuit breaker", "write", handle, run, setup=setup)
