"""``status``: the daemon and its supervision tree (DESIGN 3.3).

Wire: ``{"verb": "status", "args": {"name"?: NAME}}`` -> ``{"daemon": {...}, "tree": {...}, "broker": {...}}``;
with a name, ``tree`` is that child's entry (and its subtree).
CLI: ``foundationctl status [NAME] [--json]``.
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Callable
from typing import Any, Protocol

from daemon.control.cli_common import EXIT_OK, add_json, print_result
from daemon.control.verbs.base import Reply, Verb, str_arg
from ipc.control import ControlClient, Request
from ipc.errors import ErrorCode, FoundationError

COMMAND_DISPLAY_MAX = 48  # a worker's command is shown in `status`, shortened past this many characters


class Context(Protocol):
    def status(self) -> dict[str, Any]: ...


def handle(ctx: Context, req: Request, peer: object, reply: Reply) -> None:
    result = ctx.status()
    if "name" in req.args:
        name = str_arg(req.args, "name")
        result["tree"] = find_entry(result["tree"], name)
        if result["tree"] is None:
            raise FoundationError(ErrorCode.NO_SUCH_CHILD, f"no child named {name!r}")
    reply(result)


def find_entry(node: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The status entry named ``name`` in a status tree, depth first."""
    if node.get("name") == name:
        return node
    for child in node.get("children", ()):
        found = find_entry(child, name)
        if found is not None:
            return found
    return None


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", nargs="?", help="one child (and its subtree); none: the whole tree")
    add_json(parser)


def run(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.request("status", **({"name": args.name} if args.name else {}))
    print_result(args, result, lambda: render_status(result, usage=process_usage))
    return EXIT_OK


Row = tuple[str, str, list[str]]  # (tree prefix + name, node type, the remaining cells)





Usage = Callable[[int, int], "tuple[float, int] | None"]  # (pid, daemon pid) -> (CPU s, RSS bytes) of its group


def process_usage(pid: int, daemon_pid: int) -> tuple[float, int] | None:
    """CPU time and resident memory of a child's process group, read here in the CLI from /proc (the daemon does
    not pay for it at every status): the leader and its descendants still in its group. Only for a process whose
    parent is the daemon, so a pid reused meanwhile (or another host's status) is not measured."""
    import psutil

    try:
        leader = psutil.Process(pid)
        if leader.ppid() != daemon_pid:
            return None
        procs = [leader, *(p for p in leader.children(recursive=True) if _same_group(p, pid))]
        cpu = rss = 0.0
        for proc in procs:
            with proc.oneshot():
                times = proc.cpu_times()
                cpu += times.user + times.system
                rss += proc.memory_info().rss
        return cpu, int(rss)
    except (psutil.Error, OSError):
        return None


def _same_group(proc: Any, pgid: int) -> bool:  # (proc: a psutil.Process)
    try:
        return bool(os.getpgid(proc.pid) == pgid)
    except OSError:
        return False


def render_status(result: dict[str, Any], usage: Usage | None = None) -> str:
    """Render a ``status`` result (DESIGN 3.3) as a header line and an aligned tree.

    A pure function so the layout is tested without a daemon. Missing or null fields print as ``-``:
    a stopped worker has no pid and no uptime, and a newer daemon may omit or add keys.
    """
    daemon = result.get("daemon") or {}
    header = (
        f"foundationd pid {_dash(daemon.get('pid'))}, version {_dash(daemon.get('version'))}, "
        f"up {format_duration(daemon.get('uptime_s'))}{_spawn(daemon.get('spawn'))}{_zygote(daemon.get('zygote'))}"
    )
    rows: list[Row] = []
    tree = result.get("tree")
    if isinstance(tree, dict):
        measured = _measure(tree, daemon.get("pid"), usage) if usage is not None else {}
        _collect(tree, "", "", rows, measured if measured else None)
    name_width = max((len(label) for label, _, _ in rows), default=0)
    widths: dict[str, list[int]] = {}
    for _, kind, cells in rows:
        kind_widths = widths.setdefault(kind, [])
        for i, cell in enumerate(cells):
            if i == len(kind_widths):
                kind_widths.append(0)
            kind_widths[i] = max(kind_widths[i], len(cell))
    lines = [header]
    for label, kind, cells in rows:
        padded = [cell.ljust(width) for cell, width in zip(cells, widths[kind], strict=False)]
        lines.append("  ".join([label.ljust(name_width), *padded]).rstrip())
    return "\n".join(lines)


def _spawn(path: Any) -> str:
    """How the daemon starts commands: foundation-exec, or the slower setpriv chain when it was not built."""
    return f", spawn {path}" if isinstance(path, str) else ""


def _collect(node: dict[str, Any], own_prefix: str, child_indent: str, rows: list[Row],
             usage: Measured | None = None) -> None:
    """Depth-first: one row per node; workers and supervisors are aligned among their own kind."""
    label = own_prefix + str(node.get("name", "?"))
    if node.get("type") == "supervisor":
        cells = [
            _dash(node.get("strategy")),
            _dash(node.get("state")),
            f"restarts {_dash(node.get('restarts'))} ({_dash(node.get('intensity'))} in "
            f"{_period(node.get('period'))})",
        ]
        rows.append((label, "supervisor", cells))
        children = [child for child in node.get("children") or [] if isinstance(child, dict)]
        for i, child in enumerate(children):
            last = i == len(children) - 1
            branch, indent = ("└─ ", "   ") if last else ("├─ ", "│  ")
            _collect(child, child_indent + branch, child_indent + indent, rows, usage)
    else:
        cells = [
            _dash(node.get("state")),
            f"pid {_dash(node.get('pid'))}",
            f"up {format_duration(node.get('uptime_s'))}",
            f"restarts {_dash(node.get('restarts'))}",
            _dash(node.get("restart")),
            *(_usage(node, usage) if usage is not None else []),
            _what(node) + _reported(node),
        ]
        rows.append((label, "worker", cells))


Measured = dict[int, tuple[float, int]]


def _measure(node: dict[str, Any], daemon_pid: Any, usage: Usage) -> Measured:
    """Every running worker's usage, by pid; empty when none could be read (the columns are then left out)."""
    out: Measured = {}
    if not isinstance(daemon_pid, int):
        return out
    pid = node.get("pid")
    if node.get("type") != "supervisor" and isinstance(pid, int) and (found := usage(pid, daemon_pid)) is not None:
        out[pid] = found
    for child in node.get("children") or ():
        if isinstance(child, dict):
            out.update(_measure(child, daemon_pid, usage))
    return out


def _usage(node: dict[str, Any], measured: Measured) -> list[str]:
    found = measured.get(node["pid"]) if isinstance(node.get("pid"), int) else None
    if found is None:
        return ["cpu -", "rss -"]
    cpu, rss = found
    return [f"cpu {cpu:.1f}s", f"rss {rss / (1 << 20):.1f}M"]


def _reported(node: dict[str, Any]) -> str:
    """What a notify child said of itself (STATUS=, ERRNO=, EXIT_STATUS=), after its command."""
    said = [f'"{node["status"]}"'] if isinstance(node.get("status"), str) else []
    said += [f"{key} {node[key]}" for key in ("errno", "exit_status") if isinstance(node.get(key), int)]
    if node.get("state") != "running" and isinstance(node.get("last_exit"), str):
        ago = node.get("last_exit_ago_s")
        when = f" ({format_duration(ago)} ago)" if isinstance(ago, int | float) else ""
        said.append(f"last: {node['last_exit']}{when}")
    if isinstance(node.get("last_error"), str):  # why its last start failed (an agent's one-line cause)
        error = node["last_error"]
        said.append("error: " + (error if len(error) <= 80 else error[:79] + "…"))
    return "  " + ", ".join(said) if said else ""


def _zygote(zygote: object) -> str:
    """The agent fork server, when it runs: its state, pid and spares (agents-to-be forked ahead of time)."""
    if not isinstance(zygote, dict) or zygote.get("state") not in ("booting", "ready"):
        return ""
    spares = zygote.get("spares") if isinstance(zygote.get("spares"), list) else []
    return f"; zygote {zygote['state']} (pid {_dash(zygote.get('pid'))}, {len(spares)} spare{'s' * (len(spares) != 1)})"


def _what(node: dict[str, Any]) -> str:
    """What a worker runs: its agent class or its command line, shortened so rows stay on one line."""
    if node.get("agent"):
        text = f"agent {node['agent']}"
    elif node.get("command"):
        command = node["command"]
        if isinstance(command, list) and command:  # /opt/app/.venv/bin/python3 -> python3: the path is in --json
            command = [os.path.basename(str(command[0])) or str(command[0]), *command[1:]]
        text = shlex.join(str(part) for part in command) if isinstance(command, list) else str(command)
    else:
        return ""
    if len(text) > COMMAND_DISPLAY_MAX:
        text = text[: COMMAND_DISPLAY_MAX - 1] + "…"
    return text


def format_duration(seconds: float | None) -> str:
    """``12s``, ``3m12s``, ``2h05m``, ``3d04h``: two units are enough to read a tree at a glance."""
    if seconds is None or not isinstance(seconds, int | float):
        return "-"
    total = max(int(seconds), 0)
    days, rem = divmod(total, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _period(value: Any) -> str:
    return f"{value:g}s" if isinstance(value, int | float) else "-"


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


VERB = Verb("status", "show the daemon and its supervision tree (or one child)", "read", handle, run, setup=setup)
