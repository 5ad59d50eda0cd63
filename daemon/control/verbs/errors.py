"""``errors``: the error tracker. Errors that agents' guarded calls failed with (and those they report with
``self.report_error``), grouped by code, category and agent, counted over a sliding window and since the daemon
started. A threshold of ``[resilience.alerts]`` crossed publishes an ``alert`` event.

Wire: ``{"verb": "errors"}`` -> ``{"window", "thresholds", "groups": [{"code", "category", "agent", "in_window",
"total", "last_s_ago", "last_message"}]}``, the most frequent first. CLI: ``foundationctl errors [--json]``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Protocol

from daemon.control.cli_common import EXIT_OK, add_json, print_result
from daemon.control.verbs.base import Reply, Verb
from ipc.control import ControlClient, Request

if TYPE_CHECKING:
    from daemon.services.resilience import Resilience


class Context(Protocol):
    resilience: Resilience


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    reply(ctx.resilience.errors())


def run(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.request("errors")
    print_result(args, result, lambda: render(result))
    return EXIT_OK


def render(result: dict[str, Any]) -> str:
    rows = result["groups"]
    if not rows:
        return "no errors tracked"
    recent = f"last {result['window']:g}s"
    head = f"{'code':<24} {'category':<15} {'agent':<16} {recent:>9} {'total':>7}"
    return "\n".join([head, *(f"{r['code']:<24} {r['category']:<15} {r['agent']:<16} {r['in_window']:>9} "
                              f"{r['total']:>7}  {r['last_message']}" for r in rows)])


VERB = Verb("errors", "show tracked errors, grouped by code, category and agent", "read", handle, run,
            setup=add_json)
