"""``flag``: change one feature flag (DESIGN 3.8); every change is a ``flag_changed`` event, on disk, and pushed
to every agent.

Wire: ``{"verb": "flag", "args": {"op": "set", "name": NAME, "value": "on" | "off" | PERCENT}}``;
``{"op": "kill", "name"}`` (the kill switch: off everywhere, whatever its value, until ``revive``);
``{"op": "revive", "name"}``; ``{"op": "delete", "name"}``; each with an optional ``reason``. Result:
``{"name", "changed", "version", "flag", "value"}`` (``"deleted": true`` after delete). Errors: ``bad_request``
(a bad name or value), ``no_such_flag``.
CLI: ``foundationctl flag set NAME (on|off|PERCENT)``, ``flag kill NAME``, ``flag revive NAME``,
``flag delete NAME``, and ``flag check NAME ID`` (prints ``true``/``false``; asks the read-only ``flags`` verb).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Protocol

from daemon.control.cli_common import EXIT_OK, add_json, print_result
from daemon.control.verbs.base import Reply, Verb, str_arg
from ipc.control import ControlClient, Request
from ipc.errors import ErrorCode, FoundationError

if TYPE_CHECKING:
    from daemon.services.flags import FlagService

OPS = ("set", "kill", "revive", "delete")


class Context(Protocol):
    flags: FlagService


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    op = req.args.get("op")
    if op not in OPS:
        raise FoundationError(ErrorCode.BAD_REQUEST, f"'op' must be one of {', '.join(OPS)}")
    if op == "set" and "value" not in req.args:
        raise FoundationError(ErrorCode.BAD_REQUEST, "'value' is missing: on, off or a percentage")
    reason = req.args.get("reason")
    reply(ctx.flags.operate(op, str_arg(req.args, "name"), req.args.get("value"), by=repr(peer),
                            reason=reason if isinstance(reason, str) else None))


def setup(parser: argparse.ArgumentParser) -> None:
    ops = parser.add_subparsers(dest="op", metavar="OP", required=True)
    put = ops.add_parser("set", help="on, off, or on for PERCENT of ids (Unleash's gradual rollout)")
    put.add_argument("name", metavar="NAME")
    put.add_argument("value", metavar="on|off|PERCENT")
    for name, text in (("kill", "the kill switch: off everywhere until revived"),
                       ("revive", "lift the kill switch"), ("delete", "forget the flag (it is off)")):
        sub = ops.add_parser(name, help=text)
        sub.add_argument("name", metavar="NAME")
    for sub in ops.choices.values():
        sub.add_argument("--reason", help="why (in the flag_changed event)")
        add_json(sub)
    check = ops.add_parser("check", help="whether the flag is on for ID: prints true or false")
    check.add_argument("name", metavar="NAME")
    check.add_argument("id", metavar="ID")
    add_json(check)


def run(client: ControlClient, args: argparse.Namespace) -> int:
    if args.op == "check":
        result = client.request("flags", name=args.name, id=args.id)
        print_result(args, result, lambda: "true" if result["enabled"] else "false")
        return EXIT_OK
    extra: dict[str, Any] = {"value": args.value} if args.op == "set" else {}
    if args.reason:
        extra["reason"] = args.reason
    result = client.request("flag", op=args.op, name=args.name, **extra)
    verb = {"set": "set", "kill": "killed", "revive": "revived", "delete": "deleted"}[args.op]
    tail = f": {result['value']}" if "value" in result else ""
    print_result(args, result, lambda: f"{verb} {args.name}{tail}" + ("" if result["changed"] else " (unchanged)"))
    return EXIT_OK


VERB = Verb("flag", "set, kill, revive, delete or check one feature flag", "write", handle, run, setup=setup)
