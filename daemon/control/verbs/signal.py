"""``signal``: send a signal to a child's process group (a supervisor's: to every worker under it), as
``supervisorctl signal`` and ``systemctl kill`` do. The supervision rules apply to what follows: a child that
dies of it is restarted as after any crash.

Wire: ``{"verb": "signal", "args": {"name": NAME, "signal": "HUP" | 1}}`` -> ``{"name", "signal", "pids": [...]}``.
CLI: ``foundationctl signal NAME SIG [--json]`` (SIG: HUP, SIGHUP or 1).
"""

from __future__ import annotations

import argparse
import signal as signals
from typing import TYPE_CHECKING, Any, Protocol

from daemon.control.cli_common import EXIT_OK, add_json, print_result
from daemon.control.verbs.base import Reply, Verb, str_arg

if TYPE_CHECKING:
    from daemon.core.tree import SupervisionTree
from ipc.control import ControlClient, Request
from ipc.errors import ErrorCode, FoundationError


class Context(Protocol):
    tree: SupervisionTree

    def send_signal(self, pid: int, sig: int) -> None: ...


def parse_signal(value: Any) -> signals.Signals:
    """``HUP``, ``SIGHUP``, ``hup`` or ``1``; FoundationError(bad_request) for anything else."""
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            return signals.Signals(value)
        if isinstance(value, str):
            if value.isdigit():
                return signals.Signals(int(value))
            name = value.upper()
            return signals.Signals[name if name.startswith("SIG") else "SIG" + name]
    except (KeyError, ValueError):
        pass
    raise FoundationError(ErrorCode.BAD_REQUEST, f"'signal' must be a signal name or number, not {value!r}")


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    sig = parse_signal(req.args.get("signal"))
    name = str_arg(req.args, "name")
    from daemon.core.tree import workers_of  # (daemon side only: foundationctl starts fast)

    pids = [w.pid for w in workers_of(ctx.tree.find(name)) if w.pid is not None]
    for pid in pids:
        ctx.send_signal(pid, sig)
    reply({"name": name, "signal": sig.name, "pids": pids})


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the child (a supervisor: every worker under it)")
    parser.add_argument("signal", metavar="SIG", help="a signal name or number: HUP, SIGUSR1, 15")
    add_json(parser)


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    try:
        parse_signal(args.signal)
    except FoundationError as exc:
        parser.error(exc.message)


def run(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.request("signal", name=args.name, signal=args.signal)

    def text() -> str:
        pids = ", ".join(str(p) for p in result.get("pids", []))
        return f"sent {result.get('signal')} to {result.get('name')} ({'pid ' + pids if pids else 'not running'})"

    print_result(args, result, text)
    return EXIT_OK


VERB = Verb("signal", "send a signal to a child's process group", "write", handle, run, setup=setup, check=check)
