"""What the verbs that act on one child share: their narrow view of the daemon, the wait until the child has
settled, and the CLI's one-line confirmation (``restarted ticker (pid 4301)``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from daemon.control.cli_common import EXIT_DAEMON_ERROR, EXIT_OK, add_json, print_result
from daemon.control.verbs.base import Reply, Run, str_arg
from daemon.control.verbs.status import find_entry
from daemon.core.states import DOWN, State

if TYPE_CHECKING:
    from daemon.core.protocol import Action
    from daemon.core.spec import ChildSpec
    from daemon.core.tree import AnyNode, SupervisionTree
    from daemon.services.workflows import WorkflowSide
from ipc.control import ControlClient, Request
from ipc.errors import ErrorCode, FoundationError


class Context(Protocol):
    tree: SupervisionTree
    attached: dict[str, tuple[str, dict[str, Any]]]  # children attached at run time: (parent, raw spec)
    start_causes: dict[str, str]  # an agent's one-line cause of its last failed start, by name
    workflows: WorkflowSide

    def apply(self, actions: list[Action]) -> None: ...
    def wait(self, done: Callable[[], bool], answer: Callable[[], Any], reply: Reply, limit: float = ...) -> None: ...
    def check_spawnable(self, spec: ChildSpec) -> None: ...


def act_on_node(ctx: Context, req: Request, reply: Reply) -> None:
    """start/stop/restart/detach NAME: ask the core, answer once the child has settled (or after WAIT_LIMIT)."""
    name = str_arg(req.args, "name")
    limit = wait_limit(req)  # checked before anything changes
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
    ctx.wait(done, lambda: describe(node), reply, limit)


def wait_limit(req: Request) -> float:
    """How long the answer may wait for the child to settle: 25 s, or the request's ``wait`` (foundationctl
    --wait: as long as it takes, up to an hour)."""
    from daemon.control.waiters import LONGEST_WAIT, WAIT_LIMIT

    wait = req.args.get("wait", WAIT_LIMIT)
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 < wait <= LONGEST_WAIT:
        raise FoundationError(ErrorCode.BAD_REQUEST, f"'wait' must be a number of seconds in (0, {LONGEST_WAIT:g}]")
    return float(wait)


def add_wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true",
                        help="wait until the child has settled, however long (default: answer after 25 s at most)")


def wait_args(args: argparse.Namespace, client: ControlClient) -> dict[str, float]:
    """The request's ``wait`` for --wait; the client then waits as long as the daemon does."""
    if not getattr(args, "wait", False):
        return {}
    client.settimeout(None)
    return {"wait": 3600.0}


def describe(node: AnyNode) -> dict[str, Any]:
    return {"name": node.name, "state": str(node.state), "pid": getattr(node, "pid", None)}


def parked(node: AnyNode) -> bool:
    """Down under a supervisor that is down: the core starts it with its supervisor, so waiting is pointless."""
    return node.state in DOWN and node.parent is not None and node.parent.state in DOWN


def setup_names(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", metavar="NAME", nargs="+",
                        help="children; 'all' is every worker of the tree, 'SUP/*' every child of SUP")
    add_wait(parser)
    add_json(parser)


def expand(client: ControlClient, names: list[str]) -> list[str]:
    """``all`` (every worker of the tree, as supervisorctl's ``all`` is every process) and ``SUP/*`` (the children
    of SUP) into the names they stand for, from one status; other names as given, in order, each once."""
    if not any(n == "all" or n.endswith("/*") for n in names):
        return names
    tree = client.request("status")["tree"]
    out: list[str] = []
    for name in names:
        if name == "all":
            out += _worker_names(tree)
        elif name.endswith("/*"):
            parent = find_entry(tree, name[:-2])
            if parent is None:
                raise FoundationError(ErrorCode.NO_SUCH_CHILD, f"no supervisor named {name[:-2]!r}")
            out += [c["name"] for c in parent.get("children", ())]
        else:
            out.append(name)
    return list(dict.fromkeys(out))


def _worker_names(entry: dict[str, Any]) -> list[str]:
    if entry.get("type") != "supervisor":
        return [entry["name"]]
    return [n for child in entry.get("children", ()) for n in _worker_names(child)]


def run_lifecycle(verb: str, past: str, expected_state: str) -> Run:
    """The CLI half of the verbs that act on children and answer ``{name, state, pid}``: one request per name,
    one line per name; exit 1 if any failed (the others are still carried out, as supervisorctl does)."""

    def run(client: ControlClient, args: argparse.Namespace) -> int:
        names = expand(client, args.names)
        results: list[Any] = []
        failed = False
        for name in names:
            try:
                result = client.request(verb, name=name, **wait_args(args, client))
            except FoundationError as exc:
                if len(names) == 1:
                    raise
                failed = True
                print(f"error: {exc.code}: {name}: {exc.message}", file=sys.stderr)
                continue
            results.append(result)
            if not getattr(args, "json", False):
                print(_line(past, result, name, expected_state))
        if getattr(args, "json", False):
            print_result(args, results[0] if len(names) == 1 and results else results, str)
        return EXIT_DAEMON_ERROR if failed else EXIT_OK

    return run


def _line(past: str, result: Any, name: str, expected_state: str) -> str:
    if isinstance(result, dict) and result.get("already"):
        pid = f" (pid {result['pid']})" if result.get("pid") is not None else ""
        return f"{result.get('name', name)} was already running{pid}"
    return confirm(past, result, name, expected_state)


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
