"""``stop``: stop a child (it stays stopped).

Wire: ``{"verb": "stop", "args": {"name": NAME}}`` -> ``{"name", "state", "pid"}`` once the child has settled
(with ``"pending": true`` if it has not within 25 s). CLI: ``foundationctl stop NAME... [--json]`` (``all``, ``SUP/*``).
"""

from __future__ import annotations

from daemon.control.verbs.base import Reply, Verb
from daemon.control.verbs.lifecycle import Context, act_on_node, run_lifecycle, setup_names
from ipc.control import Request


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    act_on_node(ctx, req, reply)


VERB = Verb("stop", "stop a child (it stays stopped)", "write", handle,
            run_lifecycle("stop", "stopped", "stopped"), setup=setup_names)
