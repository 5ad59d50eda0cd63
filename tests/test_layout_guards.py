"""Guards of the layout (DESIGN 5): the supervision core does no IO, and the daemon does not depend on the SDK.

**daemon/core imports only what is on ALLOWED** (pure standard library, itself, and pure first-party leaves such
as ``ipc.errors``, which are then held to the same rules, transitively). Every import statement counts, at module
level or inside a function, ``importlib.import_module``/``__import__`` with a literal name too; the builtins that do
IO (``open``, ``print``, ``input``) are refused as calls. An allowlist rather than a list of IO modules: a new
import has to be looked at and added here on purpose. Two modules are allowed with a narrow use, decided so:

* ``signal``: the core decides *which* signal a child gets (``Signal(name, pid, signal.SIGTERM)``) and names the
  one that killed it (``signal.Signals(n).name``), so it needs the numbers and their names; sending one is the
  shell's job. Only the ``SIG*`` constants and ``Signals`` may be used, never ``signal.signal``, ``kill``, ...
* ``random``: backoff jitter needs a generator, and a test needs it seeded: the core takes a ``random.Random``
  (``SupervisionTree(rng=...)``, ``backoff.delay(policy, attempt, rng)``) and may name or build that class only,
  never call the module's shared generator (``random.random()``, ``random.uniform``) whose state it cannot inject.

**Nothing under daemon/ imports agents** (the SDK and its runtime, which build on the daemon, not the other way).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "daemon" / "core"

# Modules that do IO or reach the system: named in the failure message; none may be on ALLOWED.
IO_MODULES = frozenset({
    "os", "sys", "io", "socket", "select", "selectors", "subprocess", "zmq", "lmdb", "pathlib", "shutil",
    "threading", "multiprocessing", "concurrent", "asyncio", "fcntl", "time", "psutil", "tempfile", "logging",
    "ctypes", "mmap", "pty", "termios", "resource", "pwd", "grp", "sqlite3", "http", "urllib", "ssl", "glob",
    "fileinput", "sdnotify", "setproctitle", "orjson", "importlib", "platform", "getpass", "datetime", "uuid",
    "secrets", "faulthandler", "atexit", "gc", "tracemalloc",
})
ALLOWED = frozenset({
    "__future__", "abc", "bisect", "collections", "collections.abc", "dataclasses", "enum", "functools", "heapq",
    "itertools", "math", "operator", "re", "typing", "signal", "random",
    "contextlib", "contextvars", "errno",  # ipc.errors: error_context's scope, errno's names (no IO in any)
    "daemon.core", "ipc.errors",  # daemon.core.* and the error codes (an enum and an exception)
})
NARROW = {  # module -> the attribute names the core may use on it (see the docstring)
    "signal": re.compile(r"SIG[A-Z0-9_]+|Signals"),
    "random": re.compile(r"Random"),
}
IO_BUILTINS = frozenset({"open", "print", "input", "breakpoint", "exec", "eval", "compile"})


@dataclass(frozen=True)
class Finding:
    where: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.where}:{self.line}: {self.what}"


def imports(tree: ast.AST) -> list[tuple[int, str, tuple[str, ...]]]:
    """(line, module, names imported from it) for every import in ``tree``, at any depth."""
    out: list[tuple[int, str, tuple[str, ...]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = f"<relative {node.level}>.{module}"
            out.append((node.lineno, module, tuple(a.name for a in node.names)))
        elif isinstance(node, ast.Call) and _dynamic_import(node) is not None:
            out.append((node.lineno, _dynamic_import(node) or "", ()))
    return out


def _dynamic_import(call: ast.Call) -> str | None:
    func = call.func
    named = (isinstance(func, ast.Name) and func.id == "__import__") or (
        isinstance(func, ast.Attribute) and func.attr == "import_module")
    if named and call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
        return call.args[0].value
    return None


def allowed(module: str) -> bool:
    return any(module == a or module.startswith(a + ".") for a in ALLOWED)


def first_party_file(module: str) -> Path | None:
    path = REPO.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def check_pure(source: str, where: str) -> tuple[list[Finding], set[str]]:
    """What in ``source`` breaks the core's rules; and the first-party modules it imports (to check in turn)."""
    tree = ast.parse(source, where)
    found: list[Finding] = []
    first_party: set[str] = set()
    bound: dict[str, str] = {}  # local name -> narrow module it stands for
    for line, module, names in imports(tree):
        top = module.split(".")[0]
        if not allowed(module):
            why = "does IO" if top in IO_MODULES else "is not on the core's allowlist (pure? add it to ALLOWED)"
            found.append(Finding(where, line, f"imports {module}, which {why}"))
            continue
        if top in ("daemon", "ipc"):
            first_party.update({module, *(f"{module}.{n}" for n in names)})
        if module in NARROW:
            for name in names:
                if not NARROW[module].fullmatch(name):
                    found.append(Finding(where, line, f"uses {module}.{name}; only {NARROW[module].pattern}"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound.update({(a.asname or a.name): a.name for a in node.names if a.name in NARROW})
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
            module = bound[node.value.id]
            if not NARROW[module].fullmatch(node.attr):
                found.append(Finding(where, node.lineno, f"uses {module}.{node.attr}; only {NARROW[module].pattern}"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in IO_BUILTINS:
            found.append(Finding(where, node.lineno, f"calls {node.func.id}()"))
    return sorted(found, key=lambda f: f.line), first_party


def core_findings() -> list[Finding]:
    """Every module under daemon/core, and the first-party modules they import, transitively."""
    todo = sorted(CORE.rglob("*.py"))
    seen: set[Path] = set()
    found: list[Finding] = []
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        problems, modules = check_pure(path.read_text(), str(path.relative_to(REPO)))
        found += problems
        todo += [f for m in modules if (f := first_party_file(m)) is not None]
    return found


def agents_findings(root: Path) -> list[Finding]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for line, module, _ in imports(ast.parse(path.read_text(), str(path))):
            if module == "agents" or module.startswith("agents."):
                found.append(Finding(str(path.relative_to(root)), line, f"imports {module}"))
    return found


# ---- the guards ----


def test_the_core_imports_nothing_that_does_io() -> None:
    assert core_findings() == []


def test_nothing_under_daemon_imports_agents() -> None:
    assert agents_findings(REPO / "daemon") == []


def test_the_allowlist_holds_no_io_module() -> None:
    assert not {m.split(".")[0] for m in ALLOWED} & IO_MODULES


def test_the_core_is_importable_without_io_modules_loaded_by_it() -> None:
    """A cross-check by running it: importing the core in a fresh interpreter loads none of the IO modules that
    the interpreter (and the ``daemon`` and ``ipc`` packages, outside the core) do not load by themselves."""
    probe = ("import sys, daemon, ipc; before = set(sys.modules); "
             "import daemon.core.tree, daemon.core.plan, daemon.core.reload, daemon.core.events; "
             "print(' '.join(sorted(set(sys.modules) - before)))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    loaded = {m.split(".")[0] for m in out.stdout.split()}
    assert not loaded & (IO_MODULES - {"os", "sys", "io", "time"}), loaded  # those four are loaded at startup


# ---- the checker catches what it should ----

BAD = '''
import signal, random
from os import path

def later():
    import socket
    from daemon.shell import process
    return importlib.import_module("zmq")

signal.signal(signal.SIGTERM, None)
random.uniform(0, 1)
print("hello")
ok = (signal.SIGKILL, signal.Signals(9).name, random.Random(3))
'''


def test_the_checker_finds_io_at_any_depth_and_narrow_misuse() -> None:
    found, _ = check_pure(BAD, "bad.py")
    assert [(f.line, f.what) for f in found] == [
        (3, "imports os, which does IO"),
        (6, "imports socket, which does IO"),
        (7, "imports daemon.shell, which is not on the core's allowlist (pure? add it to ALLOWED)"),
        (8, "imports zmq, which does IO"),
        (10, "uses signal.signal; only SIG[A-Z0-9_]+|Signals"),
        (11, "uses random.uniform; only Random"),
        (12, "calls print()"),
    ]


@pytest.mark.parametrize("source", ["import agents", "from agents.runtime import x", "from agents import testing",
                                    "def f():\n    import agents.state"])
def test_the_checker_finds_an_agents_import(tmp_path: Path, source: str) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "probe.py").write_text(source)
    (tmp_path / "fine.py").write_text("import agentsmith\nfrom daemon import agents_like\n")
    assert [f.where for f in agents_findings(tmp_path)] == ["sub/probe.py"]
