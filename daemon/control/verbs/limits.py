"""``limits``: the host-wide rate limits (token buckets, ``[resilience.limits.NAME]``), with the tokens available now
and the grants and refusals since the daemon started.

Wire: ``{"verb": "limits"}`` -> ``{"limits": [{"name", "rate", "burst", "available", "granted", "refused"}]}``.
CLI: ``foundationctl limits [--json]``.
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
    reply({"limits": ctx.resilience.describe_limits()})


def run(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.request("limits")
    print_result(args, result, lambda: render(result["limits"]))
    return EXIT_OK


def render(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no rate limits (add [resilience.limits.NAME] with rate and burst to the config)"
    width = max(len(r["name"]) for r in rows)
    return "\n".join(f"{r['name'].ljust(width)}  {r['rate']:g}/s burst {r['burst']:g}  available {r['available']:g}"
                     f"  granted {r['granted']}  refused {r['refused']}" for r in rows)


VERB = Verb("limits", "list the host-wide rate limits", "read", handle, run, setup=add_json)
