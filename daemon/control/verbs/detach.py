"""``detach``: stop a child and remove it from the tree.

Wire: ``{"verb": "detach", "args": {"name": NAME}}`` -> ``{"name", "state", "pid"}`` once it is gone.
CLI: ``foundationctl detach NAME [--json]`` prints ``detached NAME``.
"""

from __future__ import annotations

import argparse

from daemon.control.cli_common import EXIT_OK, add_name, print_result
from daemon.control.verbs.base import Reply, Verb
from daemon.control.verbs.lifecycle import Context, act_on_node
from ipc.control import ControlClient, Request


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    act_on_node(ctx, req, reply)


def run(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.request("detach", name=args.name)
    name = result.get("name", args.name) if isinstance(result, dict) else args.name
    print_result(args, result, lambda: f"detached {name}")
    return EXIT_OK


VERB = Verb("detach", "stop a child and remove it from the tree", "write", handle, run, setup=add_name)
