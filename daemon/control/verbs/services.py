"""``services``: service discovery. Agents register capabilities (``self.register("pdf")``); listed are those that
are healthy: running, connected to the broker, the incarnation that registered, and the breaker they named (by default
the agent's own name) not open or isolated. A killed agent drops out at once; its next incarnation registers again.

Wire: ``{"verb": "services", "args": {"capability"?: C}}`` -> ``{"services": [{"name", "pid", "capabilities",
"meta", "breaker"}]}``. CLI: ``foundationctl services [--capability C] [--json]``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Protocol

from daemon.control.cli_common import EXIT_OK, add_json, print_result
from daemon.control.verbs.base import Reply, Verb, str_arg
from ipc.control import ControlClient, Request

if TYPE_CHECKING:
    from daemon.services.resilience import Resilience


class Context(Protocol):
    resilience: Resilience


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    capability = str_arg(req.args, "capability") if "capability" in req.args else None
    reply({"services": ctx.resilience.services(capability)})


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--capability", "-c", metavar="C", help="only agents offering this capability")
    add_json(parser)


def run(client: ControlClient, args: argparse.Namespace) -> int:
    query = {"capability": args.capability} if args.capability else {}
    result = client.request("services", **query)
    print_result(args, result, lambda: render(result["services"]))
    return EXIT_OK


def render(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no healthy agent has registered that (agents offer capabilities with self.register)"
    width = max(len(r["name"]) for r in rows)
    return "\n".join(f"{r['name'].ljust(width)}  pid {r['pid']}  {', '.join(r['capabilities'])}" for r in rows)


VERB = Verb("services", "list the healthy agents and their capabilities (service discovery)", "read", handle, run,
            setup=setup)
