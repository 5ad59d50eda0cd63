"""The README's "write your first agent" example, run as written: it must stay true."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from agents.testing import wait_for

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_files() -> dict[str, str]:
    """Code blocks preceded by ``<!-- file: NAME -->`` in the README."""
    text = README.read_text()
    return dict(re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", text, flags=re.S))


def test_readme_names_its_example_files() -> None:
    assert set(readme_files()) == {"greeter.py", "greeter.toml"}


def test_first_agent_example_runs_and_keeps_its_state(start_daemon, tmp_path: Path) -> None:
    files = readme_files()
    (tmp_path / "greeter.py").write_text(files["greeter.py"])
    config = files["greeter.toml"].replace('working_dir = "."', f'working_dir = "{tmp_path}"')
    daemon = start_daemon(config)
    daemon.wait_running("greeter")
    daemon.request("send", name="greeter", body={"name": "Ada"})
    daemon.request("send", name="greeter", body={"name": "Grace"})
    assert daemon.request("call", name="greeter", body={})["reply"] == {"hello": "Ada, Grace"}
    pid = daemon.pid("greeter")
    os.kill(pid, signal.SIGKILL)
    daemon.wait_running("greeter", not_pid=pid)
    assert daemon.request("state", name="greeter")["state"] == {"names": ["Ada", "Grace"]}
    reply = wait_for(lambda: daemon.request("call", name="greeter", body={}), timeout=10)
    assert reply["reply"] == {"hello": "Ada, Grace"}
