"""What the verbs that act on one child share: their narrow view of the daemon, the wait until the child has
settled, and the CLI's one-line confirmation (``restarted ticker (pid 4301)``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, Protocol

from daemon.control.cli_common import EXIT_OK, print_result
from daemon.control.verbs.base import Reply, Run, str_arg
from daemon.core.protocol import Action
from daemon.core.spec import ChildSpec
from daemon.core.states import DOWN, State
from daemon.core.tree import AnyNode, SupervisionTree
from ipc.control import ControlClient, Request


class Context(Protocol):
    tree: SupervisionTree

    def apply(self, actions: list[Action]) -> None: ...
    def wait(self, done: Callable[[], bool], answer: Callable[[], Any], reply: Reply) -> None: ...
    def check_spawnable(self, spec: ChildSpec) -> None: ...


def act_on_node(ctx: Context, req: Request, reply: Reply) -> None:
    """start/stop/restart/detach NAME: ask the core, answer once the child has settled (or after WAIT_LIMIT)."""
    name = str_arg(req.args, "name")
    node = ctx.tree.find(name)
    before = node.incarnation
    if req.verb == "start" and node.state is State.RUNNING:
        reply({**describe(node), "already": True})  # nothing was started: say so (supervisorctl: ERROR (already
        return  # started)); still exit 0, as systemctl start of an active unit
    if req.verb in ("start", "restart") and node.parent is not None:
        ctx.check_spawnable(node.spec)
    ctx.apply(ctx.tree.request(req.verb, name))
    if req.verb == "stop":
        done = lambda: node.state in DOWN  # noqa: E731
    elif req.verb == "detach":
        done = lambda: node.parent is None or node not in node.parent.children  # noqa: E731
    else:
        done = lambda: (  # noqa: E731
            node.incarnation > before and node.state not in (State.STARTING, State.STOPPING)
        ) or parked(node)
    ctx.wait(done, lambda: describe(node), reply)


def describe(node: AnyNode) -> dict[str, Any]:
    return {"name": node.name, "state": str(node.state), "pid": getattr(node, "pid", None)}


def parked(node: AnyNode) -> bool:
    """Down under a supervisor that is down: the core starts it with its supervisor, so waiting is pointless."""
    return node.state in DOWN and node.parent is not None and node.parent.state in DOWN


def run_lifecycle(verb: str, past: str, expected_state: str) -> Run:
    """The CLI half of the verbs that act on one child and answer ``{name, state, pid}``."""

    def run(client: ControlClient, args: argparse.Namespace) -> int:
        result = client.request(verb, name=args.name)
        if isinstance(result, dict) and result.get("already"):
            pid = f" (pid {result['pid']})" if result.get("pid") is not None else ""
            print_result(args, result, lambda: f"{result.get('name', args.name)} was already running{pid}")
            return EXIT_OK
        print_result(args, result, lambda: confirm(past, result, args.name, expected_state))
        return EXIT_OK

    return run


def confirm(past: str, result: Any, name: str, expected_state: str) -> str:
    """``restarted ticker (pid 4301)``; the state is named only when it is not the one the verb aims at."""
    res = result if isinstance(result, dict) else {}
    details = []
    if res.get("pid") is not None:
        details.append(f"pid {res['pid']}")
    state = res.get("state")
    if state is not None and state != expected_state:
        details.append(f"state {state}")
    suffix = f" ({', '.join(details)})" if details else ""
    return f"{past} {res.get('name', name)}{suffix}"
