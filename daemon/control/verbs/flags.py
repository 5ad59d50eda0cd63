"""``flags``: read the feature flags (DESIGN 3.8), one flag for one id, or where the migration stands.

Wire: ``{"verb": "flags", "args": {}}`` -> ``{"version", "flags": [{"name", "kind", "percent", "killed", "value"}],
"migration": {"stage", "name", "last"} | null}``;
``{"args": {"name": NAME, "id": ID}}`` -> ``{"name", "id", "enabled", "bucket", "known", "value"?}``
(what ``foundationctl flag check`` asks); ``{"args": {"migration": true}}`` -> the migration's status (what
``foundationctl migrate status`` asks; see the ``migrate`` verb).
CLI: ``foundationctl flags [--json]``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Protocol

from daemon.control.cli_common import EXIT_OK, add_json, print_result
from daemon.control.verbs.base import Reply, Verb, str_arg
from ipc.control import ControlClient, Request

if TYPE_CHECKING:
    from daemon.services.flags import FlagService


class Context(Protocol):
    flags: FlagService


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    if req.args.get("migration"):
        reply(ctx.flags.migrations.status())
    elif "name" in req.args:
        ident = req.args.get("id")
        reply(ctx.flags.check(str_arg(req.args, "name"), str(ident) if ident is not None else ""))
    else:
        reply(ctx.flags.listing())


def setup(parser: argparse.ArgumentParser) -> None:
    add_json(parser)


def run(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.request("flags")
    print_result(args, result, lambda: render(result))
    return EXIT_OK


def render(result: dict[str, Any]) -> str:
    """``checkout    30%`` one line a flag; the migration's stage last."""
    flags = result.get("flags", [])
    lines = [f"{f['name'].ljust(max(len(g['name']) for g in flags))}  {f['value']}" for f in flags] or ["no flags"]
    migration = result.get("migration")
    if migration:
        lines.append(f"migration: stage {migration['stage']} of {migration['last']} ({migration['name']})")
    return "\n".join(lines)


VERB = Verb("flags", "list the feature flags", "read", handle, run, setup=setup)
