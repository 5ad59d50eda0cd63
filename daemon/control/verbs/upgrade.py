"""``upgrade``: re-execute the foundationd now installed in place (same pid, no child restarted); also SIGUSR2.

Wire: ``{"verb": "upgrade"}`` -> ``{"upgrading": true, "pid": P, "generation": G}`` at once, or ``busy`` with the
reason it is refused (a child mid-transition, a run-time attach nothing can attach again, an agent that cannot
resume, a config edited on disk, an installed image that does not import).
``{"verb": "upgrade", "result": G}`` -> ``{"done": false}`` while upgrade G is under way, then
``{"done": true, "ok": bool, "error": str | null, "children": N, "took_ms": T, "pid": P}``.
CLI: ``foundationctl upgrade [--wait] [--json]``; with ``--wait`` it returns once the new image has adopted the
tree (exit 0) or the old one took it back (exit 1, the error printed). See docs/upgrade.md.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, Protocol

from daemon.control.cli_common import EXIT_DAEMON_ERROR, EXIT_OK, add_json, print_result
from daemon.control.verbs.base import Reply, Verb
from daemon.services.upgrade import Upgrader
from ipc.control import ControlClient, ControlUnreachable, Request

WAIT_TIMEOUT = 120.0


class Context(Protocol):
    upgrader: Upgrader


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    generation = req.args.get("result")
    if isinstance(generation, int) and not isinstance(generation, bool):
        result = ctx.upgrader.result(generation)
        reply({"done": False} if result is None else {"done": True, "pid": os.getpid(), **result})
        return
    ctx.upgrader.request(reply)


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true",
                        help="return once the new image has adopted the tree, or the old one took it back")
    add_json(parser)


def run(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.request("upgrade")
    if not args.wait:
        print_result(args, result, lambda: f"foundationd (pid {result['pid']}) is upgrading in place")
        return EXIT_OK
    path = str(client._sock.getpeername())  # the same path, answered by the new image
    client.close()
    done = _wait_result(path, int(result["generation"]) + 1)
    print_result(args, done, lambda: _describe(done))
    return EXIT_OK if done.get("ok") else EXIT_DAEMON_ERROR


def _wait_result(path: str, generation: int) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_TIMEOUT
    while True:
        try:
            with ControlClient(path, timeout=10) as again:
                answer = again.request("upgrade", result=generation)
            if answer.get("done"):
                return dict(answer)
        except (ControlUnreachable, OSError):
            pass  # the old image is exec'ing, or the new one has not bound the socket yet
        if time.monotonic() > deadline:
            return {"done": True, "ok": False, "error": f"no answer after {WAIT_TIMEOUT:g}s"}
        time.sleep(0.05)  # polling a daemon that is starting up, not synchronising a test


def _describe(done: dict[str, Any]) -> str:
    if done.get("ok"):
        return f"foundationd upgraded in place (pid {done.get('pid')}): {done.get('children')} children adopted " \
               f"in {done.get('took_ms')} ms"
    return f"upgrade failed, the previous image kept the tree: {done.get('error')}"


VERB = Verb("upgrade", "re-execute the installed foundationd in place, keeping every child", "write", handle, run,
            setup=setup)
