"""``cluster``: the cluster as this node's bridge sees it (DESIGN 3.10): the nodes whose lease in the JetStream KV
registry is current, how old each lease's last renewal is, and this node's lag (messages for this node in JetStream
that the bridge has not delivered yet) and unacked deliveries. Asked of the ``bridge`` agent, which ``[cluster]``
adds to the tree; without one the answer is ``no_such_agent``.

Wire: ``{"verb": "cluster", "args": {"op": "status"}}`` -> ``{"cluster": {"node", "connected", "server", "nodes":
[{"node", "age", "lease"}], "lag", "unacked"}}``. CLI: ``foundationctl cluster status [--json]``.
"""

from __future__ import annotations

import argparse
from typing import Any

from daemon.control.cli_common import EXIT_OK, add_json, print_result
from daemon.control.verbs.base import Reply, Verb, str_arg
from daemon.control.verbs.send import Context, answer
from ipc.control import ControlClient, Request
from ipc.errors import ErrorCode, FoundationError

TIMEOUT = 10.0


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    assert ctx.broker is not None
    op = str_arg(req.args, "op") if "op" in req.args else "status"
    if op != "status":
        raise FoundationError(ErrorCode.BAD_REQUEST, f"cluster knows 'status', not {op!r}")
    ctx.broker.call("bridge", {"op": "status"}, TIMEOUT, answer(reply, lambda body: {"cluster": body}))


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("op", choices=["status"], help="status: nodes, leases, lag")
    add_json(parser)


def run(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.request("cluster", op=args.op)
    print_result(args, result, lambda: render(result["cluster"]))
    return EXIT_OK


def render(status: dict[str, Any]) -> str:
    link = f"connected to {status['server']}" if status["connected"] else "not connected"
    lines = [f"node {status['node']}: {link}; lag {status['lag']}, unacked {status['unacked']}"]
    lines += [f"  {n['node']}  lease renewed {n['age']:.1f}s ago (expires after {n['lease']:g}s)"
              for n in status["nodes"]]
    return "\n".join(lines)


VERB = Verb("cluster", "the cluster: nodes, leases, lag (asked of the bridge)", "read", handle, run, setup=setup)
