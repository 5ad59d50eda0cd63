"""``state``: an agent's last committed state, read from its LMDB store (a short read transaction on an
environment the daemon keeps open: ``daemon/services/state_reader.py``).

Wire: ``{"verb": "state", "args": {"name": NAME}}`` -> ``{"name", "state", "last_seq"}``.
CLI: ``foundationctl state NAME [--json]`` prints the state as JSON.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from daemon.control.cli_common import EXIT_OK, add_name, print_result
from daemon.control.verbs.base import Reply, Verb, str_arg

if TYPE_CHECKING:
    from daemon.core.tree import SupervisionTree
from ipc.control import ControlClient, Request
from ipc.errors import ErrorCode, FoundationError


class Readers(Protocol):
    def load(self, name: str) -> tuple[Any | None, int]: ...


class Context(Protocol):
    tree: SupervisionTree
    states: Readers


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    from daemon.core.tree import Worker  # (daemon side only: foundationctl starts fast)
    from ipc.state_store import StateError

    name = str_arg(req.args, "name")
    node = ctx.tree.find(name)
    if not isinstance(node, Worker) or not node.spec.agent:
        raise FoundationError(ErrorCode.NO_SUCH_AGENT, f"{name!r} is not an agent")
    try:
        state, last_seq = ctx.states.load(name)
    except StateError as exc:
        raise FoundationError(ErrorCode.INTERNAL, f"cannot read the state of {name!r}: {exc}") from None
    reply({"name": name, "state": state, "last_seq": last_seq})


def run(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.request("state", name=args.name)
    print_result(args, result, lambda: orjson.dumps(result.get("state")).decode())
    return EXIT_OK


VERB = Verb("state", "print an agent's persisted state", "read", handle, run, setup=add_name)
