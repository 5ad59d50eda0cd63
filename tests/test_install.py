"""``pip install .`` alone (no make) gives the fast spawn path: setup.py compiles foundation-exec into the package.

The editable install this suite runs from is checked directly; a regular install into a fresh virtualenv (the
README's way) is checked end to end: its foundationd starts a child through the helper and says so in
``foundationctl status``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, SLEEP, ctl_env

from agents.testing import wait_for
from daemon.shell import process
from daemon.shell.process import PACKAGED_HELPER, find_exec_helper


def test_the_package_build_put_the_helper_next_to_the_package() -> None:
    if not os.path.exists(PACKAGED_HELPER):
        pytest.skip("no C compiler at install: the package has no foundation-exec")
    assert Path(PACKAGED_HELPER).parent == Path(process.__file__).parent / "bin"
    assert os.access(PACKAGED_HELPER, os.X_OK)
    assert find_exec_helper() == PACKAGED_HELPER  # first, before the venv's bin/


def test_an_explicit_helper_and_none_still_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOUNDATION_EXEC_HELPER", "none")
    assert find_exec_helper() is None
    monkeypatch.setenv("FOUNDATION_EXEC_HELPER", "/no/such/helper")
    assert find_exec_helper() is None


def test_the_daemon_says_which_spawn_path_it_uses(start_daemon) -> None:
    daemon = start_daemon(f'[[supervisor.children]]\nname = "w"\ncommand = {SLEEP}\n')
    expected = "foundation-exec" if find_exec_helper() is not None else "setpriv"
    assert daemon.status()["daemon"]["spawn"] == expected


@pytest.mark.slow
def test_pip_install_without_make_spawns_through_the_helper(tmp_path: Path) -> None:
    venv = tmp_path / "v"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # -q and no cache of a wheel built from this tree: what a user's `pip install .` does.
    install = subprocess.run([str(venv / "bin/pip"), "install", "-q", "--no-cache-dir", str(REPO)],
                             capture_output=True, text=True, timeout=600, check=False)
    assert install.returncode == 0, install.stderr
    found = subprocess.run([str(venv / "bin/python"), "-c", "from daemon.shell.process import find_exec_helper; "
                            "print(find_exec_helper())"], capture_output=True, text=True, check=True, timeout=60,
                           cwd=tmp_path)
    helper = Path(found.stdout.strip())
    assert helper.is_relative_to(venv), found.stdout
    assert helper.parts[-4:] == ("daemon", "shell", "bin", "foundation-exec"), found.stdout

    config = tmp_path / "f.toml"
    config.write_text(f'[[supervisor.children]]\nname = "w"\ncommand = {SLEEP}\n')
    runtime, log = tmp_path / "run", tmp_path / "foundationd.log"
    with log.open("wb") as out:
        daemon = subprocess.Popen([str(venv / "bin/foundationd"), "--config", str(config), "--runtime-dir",
                                   str(runtime), "--state-dir", str(tmp_path / "state")], stdout=out,
                                  stderr=subprocess.STDOUT, cwd=tmp_path, env=ctl_env())
    try:
        def running() -> subprocess.CompletedProcess[str] | None:
            done = subprocess.run([str(venv / "bin/foundationctl"), "--runtime-dir", str(runtime), "status"],
                                  capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
                                  env=ctl_env())
            return done if done.returncode == 0 and " running " in done.stdout else None

        done = wait_for(running, timeout=30, what="the installed foundationd to run w")
        assert done.stdout.splitlines()[0].split("; ")[0].endswith(", spawn foundation-exec"), done.stdout
        as_json = subprocess.run([str(venv / "bin/foundationctl"), "--runtime-dir", str(runtime), "status",
                                  "--json"], capture_output=True, text=True, timeout=60, check=True, cwd=tmp_path,
                                 env=ctl_env())
        assert json.loads(as_json.stdout)["daemon"]["spawn"] == "foundation-exec"
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0, log.read_text()
    assert "Traceback" not in log.read_text()
