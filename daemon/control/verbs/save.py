"""``save``: write the children attached at run time into the config file, so they survive a restart of the
daemon (and a reload no longer sees them as strangers).

Wire: ``{"verb": "save"}`` -> ``{"path", "saved": [names], "backup"}``.
CLI: ``foundationctl save [--json]``.

What is appended is what ``attach`` was given, as ``[[supervisor.children]]`` tables at the end of the file; the
file's own text and comments stay as they are, the old file is kept as ``FILE.bak``, and the new text is parsed
before it replaces the old one (written to a temporary file, fsync'd, renamed). Only children attached to the root
can be appended this way: a TOML array of tables cannot be extended under another supervisor from the end of a file,
so a child attached elsewhere is refused, by name.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from daemon.control.cli_common import EXIT_OK, add_json, print_result
from daemon.control.verbs.base import Reply, Verb

if TYPE_CHECKING:
    from daemon.config import DaemonConfig
    from daemon.core.tree import SupervisionTree
from ipc.control import ControlClient, Request
from ipc.errors import ErrorCode, FoundationError


class Context(Protocol):
    tree: SupervisionTree
    config_path: str | None
    attached: dict[str, tuple[str, dict[str, Any]]]  # name -> (parent, the spec attach was given)

    def adopt_config(self, config: DaemonConfig) -> None: ...


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    if ctx.config_path is None:
        raise FoundationError(ErrorCode.INVALID_CONFIG, "foundationd runs the embedded config: start it with "
                              "--config FILE to have a file to save into")
    live = {name: entry for name, entry in ctx.attached.items() if ctx.tree.find_quiet(name) is not None}
    nested = sorted(name for name, (parent, _) in live.items() if parent != ctx.tree.root.name)
    if nested:
        raise FoundationError(ErrorCode.INVALID_CONFIG, f"attached under a supervisor other than the root: "
                              f"{', '.join(nested)}; add them to the config by hand")
    if not live:
        reply({"path": ctx.config_path, "saved": [], "backup": None})
        return
    path = Path(ctx.config_path)
    old = path.read_text(encoding="utf-8")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    blocks = "".join(f"\n[[supervisor.children]]  # attached at run time, saved {stamp}\n{to_toml(spec)}"
                     for _, spec in live.values())
    new_text = old.rstrip("\n") + "\n" + blocks
    config = _checked(path, new_text, set(live))
    backup = path.with_name(path.name + ".bak")
    shutil.copy2(path, backup)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        out.write(new_text)
        out.flush()
        os.fsync(out.fileno())
    shutil.copymode(path, tmp)
    tmp.replace(path)
    for name in live:
        ctx.attached.pop(name, None)
    ctx.adopt_config(config)
    reply({"path": str(path), "saved": sorted(live), "backup": str(backup)})


def _checked(path: Path, text: str, names: set[str]) -> DaemonConfig:
    """The new text as the daemon would load it: it must parse and hold every saved child at the root."""
    from daemon.config import ConfigError, load_config  # (daemon side only: foundationctl starts fast)

    tmp = path.with_name(f".{path.name}.check.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        config = load_config(str(tmp))
    except ConfigError as exc:
        raise FoundationError(ErrorCode.INVALID_CONFIG, f"the saved children do not fit in {path} (nothing was "
                              f"written): {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    missing = names - {child.name for child in config.root.children}
    if missing:
        raise FoundationError(ErrorCode.INVALID_CONFIG, f"{path} defines the root's children in a form that cannot "
                              f"be appended to (nothing was written): {', '.join(sorted(missing))}")
    return config


def to_toml(table: dict[str, Any]) -> str:
    """One child's keys as TOML lines; nested tables inline (env, backoff, limits). JSON strings are TOML basic
    strings."""
    return "".join(f"{key} = {_value(value)}\n" for key, value in table.items())


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return orjson.dumps(value).decode()
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{orjson.dumps(k).decode()} = {_value(v)}" for k, v in value.items()) + " }"
    raise FoundationError(ErrorCode.INTERNAL, f"cannot write {type(value).__name__} into TOML")


def run(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.request("save")

    def text() -> str:
        if not result.get("saved"):
            return "nothing to save: no child attached at run time"
        return f"saved {', '.join(result['saved'])} into {result['path']} (previous file: {result['backup']})"

    print_result(args, result, text)
    return EXIT_OK


VERB = Verb("save", "write the children attached at run time into the config file", "write", handle, run,
            setup=add_json)
