"""``attach``: add a child to a running supervisor (OTP's start_child).

Wire: ``{"verb": "attach", "args": {"parent": SUP, "spec": {...config keys...}}}`` -> ``{"name", "state", "pid"}``
once its first start has settled. Optional args: ``ephemeral`` (removed from the tree once it ends and is not
restarted, as OTP's simple_one_for_one children), ``durable`` (attached again when the daemon restarts; the
coordinator attaches workflow processes so), ``sync`` (default true; false: answered as soon as the child is added,
and a failed first start counts as a crash in its supervisor instead of being reported here).
CLI: ``foundationctl attach NAME [--parent SUP] [--restart TYPE] [--json] (-- COMMAND... | --agent MODULE:CLASS)``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from daemon.control.cli_common import EXIT_OK, PROG, add_json, print_result
from daemon.control.verbs.base import Reply, Verb
from daemon.control.verbs.lifecycle import Context, add_wait, describe, parked, wait_args, wait_limit
from daemon.core.states import State
from ipc.control import ControlClient, Request
from ipc.errors import ErrorCode, FoundationError

RESTART_TYPES = ("permanent", "transient", "temporary")
USAGE = (f"{PROG} attach NAME [--parent SUP] [--restart TYPE] [--env K=V] [--working-dir DIR] [--set KEY=VALUE] "
         "[--json] (-- COMMAND... | --agent MODULE:CLASS)")


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    parent = req.args.get("parent", "root")
    if not isinstance(parent, str):
        raise FoundationError(ErrorCode.BAD_REQUEST, "'parent' must be a string")
    from daemon.config import ConfigError, child_spec_from_dict  # (daemon side only: foundationctl starts fast)

    try:
        spec = child_spec_from_dict(req.args.get("spec"), key="spec")
    except ConfigError as exc:
        raise FoundationError(ErrorCode.INVALID_SPEC, str(exc)) from None
    limit = wait_limit(req)  # checked before anything changes
    ephemeral, durable = req.args.get("ephemeral", False), req.args.get("durable", False)
    sync = req.args.get("sync", True)
    if not all(isinstance(flag, bool) for flag in (ephemeral, durable, sync)):
        raise FoundationError(ErrorCode.BAD_REQUEST, "'ephemeral', 'durable' and 'sync' must be true or false")
    ctx.check_spawnable(spec)
    if durable and ctx.tree.find_quiet(spec.name) is None:
        ctx.workflows.durable.remember(spec.name, parent, req.args["spec"], ephemeral)
    try:
        ctx.apply(ctx.tree.attach(parent, spec, synchronous=sync, ephemeral=ephemeral))
    except FoundationError:
        if durable:
            ctx.workflows.durable.removed((spec.name,))
        raise
    node = ctx.tree.find_quiet(spec.name)
    if node is None or node.rejected is not None:  # failed at once (e.g. a spawn error) and removed again
        raise _rejected(spec.name, node.rejected if node is not None else None, ctx)
    if not sync:  # answered now; its first start is supervised as any restart (a failure counts as a crash)
        reply(describe(node))
        return
    if not ephemeral:
        ctx.attached[spec.name] = (parent, req.args["spec"])  # what `save` writes into the config

    def answer() -> Any:
        if node.rejected is not None:
            ctx.attached.pop(spec.name, None)
            return _rejected(spec.name, node.rejected, ctx)
        return describe(node)

    ctx.wait(lambda: node.rejected is not None or (node.incarnation > 0 and node.state is not State.STARTING)
             or parked(node), answer, reply, limit)


def _rejected(name: str, why: str | None, ctx: Context) -> FoundationError:
    """OTP's start_child error: the child failed its first start and was not added; an agent's own one-line
    cause (its last output line) is added when it gave one."""
    cause = ctx.start_causes.pop(name, None)
    message = why or f"{name} failed to start"
    return FoundationError(ErrorCode.SPAWN_FAILED, f"{message}: {cause}; not attached" if cause
                           else f"{message}; not attached")


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the new child's name")
    parser.add_argument("--parent", metavar="SUP", default="root", help="supervisor to attach to (root)")
    parser.add_argument(
        "--restart", metavar="TYPE", choices=RESTART_TYPES, help="permanent|transient|temporary"
    )
    parser.add_argument("--agent", metavar="MODULE:CLASS", help="run a Python agent instead of a command")
    add_wait(parser)
    parser.add_argument("--env", metavar="K=V", action="append", default=[], help="an environment variable (repeat)")
    parser.add_argument("--working-dir", metavar="DIR", help="its working directory (relative: to this shell's)")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="settings",
                        help="any child key of the config, VALUE in TOML: --set shutdown=2.5 --set 'ready=\"notify\"' "
                        "--set 'limits={nofile=4096}' (repeat)")
    add_json(parser)
    parser.epilog = "Everything after -- is the command, passed as is: options there belong to it."


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    import tomllib  # (only for --set)

    args.extra = {}
    for item in args.settings:
        key, sep, value = item.partition("=")
        try:
            args.extra.update(tomllib.loads(f"{key.strip()} = {value}") if sep and key.strip() else {"": None})
        except tomllib.TOMLDecodeError as exc:
            parser.error(f"--set {item}: not KEY=VALUE with a TOML value ({exc})")
        if "" in args.extra:
            parser.error(f"--set {item}: not KEY=VALUE")
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--env {item}: not K=V")
        args.extra.setdefault("env", {})[key] = value
    if args.working_dir is not None:
        args.extra["working_dir"] = os.path.abspath(args.working_dir)  # the daemon's directory means nothing here
    if args.tail and args.agent:
        parser.error("give either -- COMMAND... or --agent MODULE:CLASS, not both")
    if not args.tail and not args.agent:
        parser.error("a command (-- COMMAND...) or --agent MODULE:CLASS is required")


def run(client: ControlClient, args: argparse.Namespace) -> int:
    spec: dict[str, Any] = {"name": args.name}
    if args.agent:
        spec["agent"] = args.agent
    else:
        spec["command"] = list(args.tail)
    if args.restart:
        spec["restart"] = args.restart
    spec.update(args.extra)  # validated by the daemon as a config child is (invalid_spec names the key)
    result = client.request("attach", parent=args.parent, spec=spec, **wait_args(args, client))
    name = result.get("name", args.name) if isinstance(result, dict) else args.name
    print_result(args, result, lambda: f"attached {name} to {args.parent}")
    return EXIT_OK


VERB = Verb("attach", "add a child to a running supervisor", "write", handle, run, setup=setup, check=check,
            takes_tail=True, usage=USAGE)
