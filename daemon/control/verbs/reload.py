"""``reload`` (also SIGHUP): re-read the config and apply the difference; an invalid config changes nothing
(``daemon/services/reload.py``).

Wire: ``{"verb": "reload"}`` -> ``{"removed": [...], "updated": [...], "restarted": [...], "added": [...],
"reordered": [...]}`` once every touched child has settled. CLI: ``foundationctl reload [--json]``.
"""

from __future__ import annotations

import argparse
from typing import Protocol

from daemon.control.cli_common import EXIT_OK, add_json, print_result
from daemon.control.verbs.base import Reply, Verb
from ipc.control import ControlClient, Request


class Context(Protocol):
    def reload(self, reply: Reply | None) -> None: ...


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    ctx.reload(reply)


def run(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.request("reload")

    def text() -> str:
        parts = [f"{what} {', '.join(names)}" for what, names in result.items() if names]
        return "reloaded: " + ("; ".join(parts) if parts else "no changes")

    print_result(args, result, text)
    return EXIT_OK


VERB = Verb("reload", "re-read the config and apply the difference", "write", handle, run, setup=add_json)
