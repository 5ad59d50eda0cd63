"""``doctor``: the production-readiness checklist against the live daemon (DESIGN 3.9), one line a check; exit
status 0 only when every check passes (1 otherwise). The checks and how they are made: daemon/services/doctor.py.

    ok    tree                root running
    FAIL  process groups      1 outside every child's group (escaped with setsid? ...): pid 4242 sleep (group 4242)
    ok    zombies             none
    ...

Wire: ``{"verb": "doctor", "args": {"window"?: S}}`` -> ``{"ok": bool, "checks": [{"name", "ok", "detail"}]}``,
answered once the checks are done (``window`` seconds between the two samples, 0.5 by default; the probe commit
runs in a child meanwhile).
CLI: ``foundationctl doctor [--window S] [--json]``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Protocol

from daemon.control.cli_common import EXIT_DAEMON_ERROR, EXIT_OK, add_json, print_result
from daemon.control.verbs.base import Reply, Verb
from ipc.control import ControlClient, Request
from ipc.errors import ErrorCode, FoundationError

if TYPE_CHECKING:
    from daemon.services.observability import Observability

MAX_WINDOW = 60.0
PROBE_TIMEOUT = 10.0  # (daemon/services/doctor.py's, without importing it here)


class Context(Protocol):
    obs: Observability


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    from daemon.services.doctor import WINDOW

    window = req.args.get("window", WINDOW)
    if isinstance(window, bool) or not isinstance(window, int | float) or not 0 <= window <= MAX_WINDOW:
        raise FoundationError(ErrorCode.BAD_REQUEST, f"'window' must be a number of seconds from 0 to {MAX_WINDOW:g}")
    ctx.obs.doctor.run(float(window), reply)


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--window", type=float, default=None, metavar="S",
                        help="seconds between the two samples that tell a trend (0.5)")
    add_json(parser)


def run(client: ControlClient, args: argparse.Namespace) -> int:
    query = {} if args.window is None else {"window": args.window}
    client.settimeout((args.window or 0.5) + PROBE_TIMEOUT + 10)
    result = client.request("doctor", **query)
    print_result(args, result, lambda: render(result))
    return EXIT_OK if result.get("ok") else EXIT_DAEMON_ERROR


def render(result: dict[str, Any]) -> str:
    checks = result.get("checks") or []
    width = max((len(str(c.get("name"))) for c in checks), default=0)
    lines = [f"{'ok  ' if c.get('ok') else 'FAIL'}  {str(c.get('name')).ljust(width)}  {c.get('detail', '')}"
             for c in checks]
    failed = sum(1 for c in checks if not c.get("ok"))
    lines.append("all checks pass" if not failed else f"{failed} of {len(checks)} checks failed")
    return "\n".join(lines)


VERB = Verb("doctor", "check the live daemon's readiness, one line a check; exit 0 if all pass",
            "read", handle, run, setup=setup)
