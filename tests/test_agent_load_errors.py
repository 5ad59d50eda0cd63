"""Issue 11 defect 3: an agent that cannot start says why in one line (its last output line, the daemon's log and
``status``), with only the user's frames above it, on both start paths (exec'd and forked from the zygote)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agents.testing import DaemonProcess, wait_for

MODULES = {
    "boom.py": "from agents.sdk import Agent\n\nclass Fine(Agent):\n    pass\n\nNOT_A_CLASS = 3\n",
    "initfail.py": ("from agents.sdk import Agent\n\n"
                    "class Bad(Agent):\n    def init(self):\n        return helper()\n\n"
                    "def helper():\n    raise RuntimeError('database is not there')\n"),
    "badimport.py": "import no_such_dependency_xyz\n",
}
CASES = [
    ("boom:Nope", "cannot load boom:Nope: module 'boom' has no attribute 'Nope'"),
    ("boom:NOT_A_CLASS", "cannot load boom:NOT_A_CLASS: boom:NOT_A_CLASS is a int, not an Agent subclass"),
    ("nosuchmod:Thing", "cannot load nosuchmod:Thing: no module named 'nosuchmod' (from nosuchmod:Thing; is "
                        "working_dir or PYTHONPATH right?)"),
    ("initfail:Bad", "Bad.init() failed: RuntimeError: database is not there"),
    ("badimport:X", "cannot load badimport:X: ModuleNotFoundError: No module named 'no_such_dependency_xyz'"),
]


def modules(tmp_path: Path) -> Path:
    for name, text in MODULES.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def run_agent(tmp_path: Path, target: str) -> subprocess.CompletedProcess[str]:
    env = {"FOUNDATION_NAME": "x", "FOUNDATION_BROKER": "ipc:///nonexistent", "FOUNDATION_STATE_DIR": str(tmp_path),
           "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "agents.runtime", target], cwd=modules(tmp_path), env=env,
                          capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize(("target", "cause"), CASES)
def test_the_last_line_names_the_cause(tmp_path: Path, target: str, cause: str) -> None:
    out = run_agent(tmp_path, target)
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1] == f"foundation-agent: {cause}"


def test_only_the_users_frames_are_shown(tmp_path: Path) -> None:
    err = run_agent(tmp_path, "initfail:Bad").stderr
    assert "initfail.py" in err
    assert "in helper" in err
    assert "agents/runtime.py" not in err
    assert "importlib" not in err
    assert run_agent(tmp_path, "boom:Nope").stderr.count("\n") == 1  # no traceback at all: nothing of the user's ran


@pytest.mark.parametrize("fork_server", [True, False])
def test_the_daemon_logs_the_cause_and_status_shows_it(start_daemon, tmp_path: Path, fork_server: bool) -> None:
    """The agent starts once, then its class is renamed away and it is restarted: every start now fails."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "flip.py").write_text("from agents.sdk import Agent\n\nclass Flip(Agent):\n    pass\n")
    d: DaemonProcess = start_daemon(f"""
        [daemon]
        fork_server = {str(fork_server).lower()}
        [supervisor]
        intensity = 1000
        [[supervisor.children]]
        name = "agent"
        agent = "flip:Flip"
        working_dir = "{work}"
        backoff = {{ initial = 0.5, max = 0.5 }}
        """)
    d.wait_running("agent")
    (work / "flip.py").write_text("from agents.sdk import Agent\n\nclass SomethingElse(Agent):\n    pass\n")
    d.request("restart", name="agent")
    cause = "cannot load flip:Flip: module 'flip' has no attribute 'Flip'"
    d.wait_log(f"agent failed to start: {cause}")
    wait_for(lambda: d.node("agent").get("last_error") == cause, what="last_error in status")
