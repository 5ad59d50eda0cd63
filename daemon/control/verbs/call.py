"""``call``: ask an agent and wait for its reply (answered after the agent has committed the call's effect).

Wire: ``{"verb": "call", "args": {"name": NAME, "body": JSON, "timeout": S}}`` -> ``{"reply": JSON}``.
CLI: ``foundationctl call NAME JSON [--timeout S] [--json]`` prints the reply.
"""

from __future__ import annotations

import argparse

import orjson

from daemon.control.cli_common import EXIT_OK, add_json, check_json, print_result
from daemon.control.verbs.base import Reply, Verb, str_arg
from daemon.control.verbs.send import Context, answer
from ipc.control import ControlClient, Request
from ipc.errors import ErrorCode, FoundationError


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    assert ctx.broker is not None
    timeout = req.args.get("timeout", 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 3600:
        raise FoundationError(ErrorCode.BAD_REQUEST, "'timeout' must be a number of seconds in (0, 3600]")
    if "body" not in req.args:
        raise FoundationError(ErrorCode.BAD_REQUEST, "'body' is required (any JSON value)")
    ctx.broker.call(str_arg(req.args, "name"), req.args["body"], float(timeout),
                    answer(reply, lambda body: {"reply": body}))


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the agent to ask")
    parser.add_argument("body", metavar="JSON", help="the request, a JSON value")
    parser.set_defaults(verb_name="call")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S", help="seconds to wait (5)")
    add_json(parser)


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 0 < args.timeout <= 3600:
        parser.error("--timeout must be a number of seconds in (0, 3600]")
    check_json(parser, args)


def run(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.request("call", name=args.name, body=args.parsed_body, timeout=args.timeout)
    reply = result.get("reply") if isinstance(result, dict) else result
    if getattr(args, "json", False):
        print_result(args, result, str)
    else:
        print(orjson.dumps(reply).decode())
    return EXIT_OK


VERB = Verb("call", "ask an agent and print its reply", "quiet", handle, run, setup=setup, check=check)
