"""``metrics``: the Prometheus text that ``/metrics`` serves, read over the control socket instead (also when no
``[metrics] listen`` is configured): for a look by hand, or a node exporter's textfile collector.

Wire: ``{"verb": "metrics"}`` -> ``{"text": "# HELP foundation_child_state ..."}``.
CLI: ``foundationctl metrics [--json]``.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Protocol

from daemon.control.cli_common import EXIT_OK, add_json, print_result
from daemon.control.verbs.base import Reply, Verb
from ipc.control import ControlClient, Request

if TYPE_CHECKING:
    from daemon.services.observability import Observability


class Context(Protocol):
    obs: Observability


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    reply({"text": ctx.obs.metrics_text().decode()})


def setup(parser: argparse.ArgumentParser) -> None:
    add_json(parser)


def run(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.request("metrics")
    print_result(args, result, lambda: result["text"].rstrip("\n"))
    sys.stdout.flush()
    return EXIT_OK


VERB = Verb("metrics", "print the Prometheus metrics that /metrics serves", "read", handle,
            run, setup=setup)
