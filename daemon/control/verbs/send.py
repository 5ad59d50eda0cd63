"""``send``: cast one JSON message to an agent; answered with its id once the daemon has durably accepted it
(after the group commit). DESIGN 3.5.

Wire: ``{"verb": "send", "args": {"name": NAME, "body": JSON, "producer"?: ID, "seq"?: N}}`` -> ``{"id"}``, or
``{"id": ID | "duplicate", "duplicate": true}`` for a resend of a (producer, seq) already accepted (nothing is queued).
CLI: ``foundationctl send NAME JSON`` or ``send NAME - [--producer ID]`` (one message per line of stdin,
pipelined, one id per line for each message this run queued; lines already accepted by an earlier run are
skipped and summed up in one note on stderr, exit 0).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any, Protocol

import orjson

from daemon.control.cli_common import EXIT_DAEMON_ERROR, EXIT_OK, add_json, check_json, print_result
from daemon.control.verbs.base import Reply, Verb, str_arg
from ipc.control import ControlClient, Request
from ipc.errors import ErrorCode, FoundationError


class Messaging(Protocol):
    def send(self, to: str, body: Any, respond: Any, producer: str | None = None, seq: int | None = None) -> None: ...
    def call(self, to: str, body: Any, timeout: float, respond: Any) -> None: ...


class Context(Protocol):
    broker: Messaging | None


def answer(reply: Reply, shape: Any) -> Any:
    """Adapt the broker's (result, error) callback to a control reply."""

    def respond(result: Any, err: FoundationError | None) -> None:
        reply(err if err is not None else shape(result))

    return respond


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    assert ctx.broker is not None
    if "body" not in req.args:
        raise FoundationError(ErrorCode.BAD_REQUEST, "'body' is required (any JSON value)")
    producer, seq = req.args.get("producer"), req.args.get("seq")
    paired = isinstance(producer, str) and producer and isinstance(seq, int) and not isinstance(seq, bool)
    if (producer is not None or seq is not None) and not paired:
        raise FoundationError(ErrorCode.BAD_REQUEST, "'producer' (string) and 'seq' (integer) go together")
    ctx.broker.send(str_arg(req.args, "name"), req.args["body"], answer(reply, _result), producer=producer, seq=seq)


def _result(receipt: Any) -> dict[str, Any]:
    """The broker's receipt as the reply: a duplicate says so, so that a rerun does not look like new messages."""
    return {"id": receipt.wire_id, "duplicate": True} if receipt.duplicate else {"id": receipt.id}


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the recipient agent")
    parser.add_argument("body", metavar="JSON", help="the message, a JSON value; - reads one per line of stdin")
    parser.set_defaults(verb_name="send")
    parser.add_argument("--producer", metavar="ID",
                        help="with -: number the lines 1, 2, ... under this producer id, so that running the same "
                        "input again after a failure skips what was already accepted")
    add_json(parser)


def run(client: ControlClient, args: argparse.Namespace) -> int:
    if args.body != "-":
        result = client.request("send", name=args.name, body=args.parsed_body)
        print_result(args, result, lambda: str(result.get("id")))
        return EXIT_OK
    failed = 0
    lines = (line for line in sys.stdin if line.strip())
    bodies = ((n, _json_line(line)) for n, line in enumerate(lines, 1))
    valid = []

    def requests() -> Iterator[tuple[str, dict[str, Any]]]:
        nonlocal failed
        for n, body in bodies:
            if isinstance(body, ValueError):
                failed += 1
                print(f"error: bad_request: line {n}: {body}", file=sys.stderr)
                continue
            valid.append(n)
            extra = {"producer": args.producer, "seq": n} if args.producer else {}
            yield "send", {"name": args.name, "body": body, **extra}

    out = sys.stdout
    duplicates: list[int] = []
    for index, result in enumerate(client.pipeline(requests())):
        if isinstance(result, FoundationError):
            failed += 1
            print(f"error: {result.code}: line {valid[index]}: {result.message}", file=sys.stderr)
        elif result.get("duplicate"):
            duplicates.append(valid[index])
        else:
            out.write(f"{result['id']}\n")
    out.flush()
    if duplicates:
        print(f"note: {len(duplicates)} line(s) already accepted under producer {args.producer!r}, not queued again: "
              f"lines {_ranges(duplicates)}", file=sys.stderr)
    return EXIT_DAEMON_ERROR if failed else EXIT_OK


def _ranges(numbers: list[int]) -> str:
    """``1-41, 43``: a rerun skips long runs of lines; one note names them all."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _json_line(line: str) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return ValueError(f"not valid JSON: {exc}")


VERB = Verb("send", "cast a JSON message to an agent; prints its id once durably accepted", "quiet", handle, run,
            setup=setup, check=check_json)
