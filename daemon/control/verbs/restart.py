"""``restart``: stop a child and start it again.

Wire: ``{"verb": "restart", "args": {"name": NAME}}`` -> ``{"name", "state", "pid"}`` once the child has settled
(with ``"pending": true`` if it has not within 25 s).
CLI: ``foundationctl restart NAME... [--json]`` (``all``, ``SUP/*``).
"""

from __future__ import annotations

from daemon.control.verbs.base import Reply, Verb
from daemon.control.verbs.lifecycle import Context, act_on_node, run_lifecycle, setup_names
from ipc.control import Request


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    act_on_node(ctx, req, reply)


VERB = Verb("restart", "stop a child and start it again", "write", handle,
            run_lifecycle("restart", "restarted", "running"), setup=setup_names)
