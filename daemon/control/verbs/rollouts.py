"""``rollouts``: where the current (or last) rollout of an agent version stands (DESIGN 3.8).

Wire: ``{"verb": "rollouts", "args": {}}`` -> ``{"rollout": null | {"id", "phase": "canary" | "all" | "paused" |
"done" | "rolled_back" | "aborted", "paused_phase"?, "accepted"?, "ticks", "baseline", "applied", "since", "held_s",
"hold", "interval", "window", "percent", "targets",
"canary", "changed", "to": {"agent", "env"}, "previous": {NAME: {"agent", "env"}}, "reason", "by", "started",
"ended", "stages", "stage", "history": [{"ts", "step", "names", "by", "percent"?, "reason"?}],
"gates"?: {"outcome", "failed", "unjudged", "figures"}, "crashed"?: [TEXT]}}`` (``gates`` and ``crashed`` while it
is in progress).
CLI: ``foundationctl rollouts [--json]`` (the same as ``rollout status``).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Protocol

from daemon.control.cli_common import EXIT_OK, add_json, print_result
from daemon.control.verbs.base import Reply, Verb
from daemon.control.verbs.rollout import render
from ipc.control import ControlClient, Request

if TYPE_CHECKING:
    from daemon.services.flags import FlagService


class Context(Protocol):
    flags: FlagService


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    reply(ctx.flags.rollouts.status())


def run(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.request("rollouts")
    print_result(args, result, lambda: render(result))
    return EXIT_OK


VERB = Verb("rollouts", "where the rollout of an agent version stands", "read", handle, run, setup=add_json)
