"""The layout's rules (DESIGN 5), checked on the source: the supervision core does no IO, and the daemon does not
import the agent SDK.

The core (daemon/core) decides; the shell acts. It may import ``random`` (backoff jitter: the generator is
injected into SupervisionTree, so tests fix it) and ``signal``, for the numbers of SIGTERM and SIGKILL in the
actions it returns: nothing in the core sends a signal (that needs ``os.kill``/``os.killpg``, from ``os``, which is
forbidden). Everything that reads or writes the outside world, or waits on it, is forbidden, wherever the import
statement sits (top level or inside a function).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "daemon" / "core"
IO_MODULES = {
    "os", "sys", "io", "socket", "select", "selectors", "subprocess", "threading", "multiprocessing", "asyncio",
    "concurrent", "fcntl", "termios", "pty", "mmap", "shutil", "pathlib", "tempfile", "glob", "time", "datetime",
    "logging", "psutil", "zmq", "lmdb", "sdnotify", "setproctitle", "resource", "pwd", "grp", "ctypes", "urllib",
    "http", "ssl", "sqlite3", "tomllib", "importlib", "builtins",
}


def imported(path: Path) -> set[str]:
    """The top-level package of every module a file imports (relative imports resolved to the daemon package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add("daemon" if node.level else (node.module or "").split(".")[0])
    return names


def imported_modules(path: Path) -> set[str]:
    """Every module path a file imports, as written (``daemon.shell.loop``, ``ipc.errors``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_the_core_imports_nothing_that_does_io(path: Path) -> None:
    assert not imported(path) & IO_MODULES
    inside = {m for m in imported_modules(path) if m.startswith(("daemon.", "ipc."))}
    allowed = {m for m in inside if m == "daemon.core" or m.startswith("daemon.core.") or m == "ipc.errors"}
    assert inside == allowed, f"{path.name} reaches outside the core: {sorted(inside - allowed)}"


def test_the_guard_sees_imports_inside_functions(tmp_path: Path) -> None:
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("def f():\n    import os\n    from socket import socket\n    return os, socket\n")
    assert imported(sneaky) >= {"os", "socket"}


@pytest.mark.parametrize("path", sorted((ROOT / "daemon").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_daemon_does_not_import_the_agent_sdk(path: Path) -> None:
    assert "agents" not in imported(path)
