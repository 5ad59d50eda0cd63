"""``breakers``: the host-wide circuit breakers (DESIGN 3.7), each with its state, the calls, failures and slow calls in
its window, and its retry budget. See daemon/services/resilience.py and docs/resilience.md.

Wire: ``{"verb": "breakers"}`` -> ``{"breakers": [{"name", "state", "open_for_s", "since_s", "window": {"calls",
"failures", "slow", "failure_rate", "seconds"}, "trials_out", "totals", "settings", "retry_budget"}]}``.
CLI: ``foundationctl breakers [--json]``.
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
    reply({"breakers": ctx.resilience.describe_breakers()})


def run(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.request("breakers")
    print_result(args, result, lambda: render(result["breakers"]))
    return EXIT_OK


def render(rows: list[dict[str, Any]]) -> str:
    """``payments  open (12.5s left)  3/10 failed in 10s  opened 2x``: one line a breaker."""
    if not rows:
        return "no breakers yet (an agent makes one by using it: self.breaker(NAME))"
    width = max(len(r["name"]) for r in rows)
    lines = []
    for row in rows:
        state = str(row["state"]).replace("_", "-")
        if row.get("open_for_s") is not None:
            state += f" ({row['open_for_s']:g}s left)"
        window = row["window"]
        lines.append(f"{row['name'].ljust(width)}  {state:<20}  {window['failures']}/{window['calls']} failed, "
                     f"{window['slow']} slow in {window['seconds']:g}s  opened {row['totals']['opened']}x")
    return "\n".join(lines)


VERB = Verb("breakers", "list the host-wide circuit breakers", "read", handle, run, setup=add_json)
