"""``cluster``: the cluster as this node's bridge sees it (DESIGN 3.10), asked of the ``bridge`` agent, which
``[cluster]`` adds to the tree; without one the answer is ``no_such_agent``.

``status``: the nodes whose lease in the JetStream KV registry is current, how old each lease's last renewal is,
the agents each runs and the capabilities they registered; this node's lag (messages for this node in JetStream
that the bridge has not delivered yet), unacked deliveries, deliveries waiting for the local broker, how often the
inbound consumer was resynced, and the last casts of ours that another node refused (no such agent there).
``services``: service discovery across nodes, the agents of every node offering a capability.

Wire: ``{"verb": "cluster", "args": {"op": "status"}}`` -> ``{"cluster": {"node", "connected", "server", "nodes":
[{"node", "age", "lease", "agents", "services": {agent: {capability: meta}}}], "lag", "unacked", "waiting",
"resyncs", "rejected": [{"node", "to", "id", "seq", "error", "ts"}]}}``;
``{"verb": "cluster", "args": {"op": "services", "capability": C}}`` (C optional) -> ``{"cluster": [{"name":
"agent@node", "node", "agent", "capabilities", "meta"}]}``.
CLI: ``foundationctl cluster status [--json]``, ``foundationctl cluster services [--capability C] [--json]``.
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
    if op == "status":
        ask: dict[str, Any] = {"op": "status"}
    elif op == "services":
        ask = {"op": "discover", "capability": str_arg(req.args, "capability") if "capability" in req.args else None}
    else:
        raise FoundationError(ErrorCode.BAD_REQUEST, f"cluster knows 'status' and 'services', not {op!r}")
    ctx.broker.call("bridge", ask, TIMEOUT, answer(reply, lambda body: {"cluster": body}))


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("op", choices=["status", "services"],
                        help="status: nodes, leases, agents, lag; services: capabilities across nodes")
    parser.add_argument("--capability", help="services: only the agents offering this capability")
    add_json(parser)


def run(client: ControlClient, args: argparse.Namespace) -> int:
    fields = {"capability": args.capability} if args.op == "services" and args.capability else {}
    result = client.request("cluster", op=args.op, **fields)
    print_result(args, result, lambda: render(result["cluster"]) if args.op == "status"
                 else render_services(result["cluster"]))
    return EXIT_OK


def render(status: dict[str, Any]) -> str:
    link = f"connected to {status['server']}" if status["connected"] else "not connected"
    lines = [f"node {status['node']}: {link}; lag {status['lag']}, unacked {status['unacked']}"
             f", waiting {status.get('waiting', 0)}, resyncs {status.get('resyncs', 0)}"]
    for n in status["nodes"]:
        lines.append(f"  {n['node']}  lease renewed {n['age']:.1f}s ago (expires after {n['lease']:g}s)")
        services = n.get("services", {})
        for agent in n.get("agents", []):
            caps = ", ".join(sorted(services.get(agent, {})))
            lines.append(f"    {agent}" + (f"  [{caps}]" if caps else ""))
    for r in status.get("rejected", []):
        lines.append(f"  refused by {r['node']}: {r['to']} (our {r.get('id')}): {r['error'].get('message')}")
    return "\n".join(lines)


def render_services(found: list[dict[str, Any]]) -> str:
    if not found:
        return "no agent in the cluster offers that"
    return "\n".join(f"{s['name']:<32} {', '.join(s['capabilities'])}" for s in found)


VERB = Verb("cluster", "the cluster: nodes, leases, agents, lag, services (asked of the bridge)", "read", handle, run,
            setup=setup)
