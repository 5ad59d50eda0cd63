"""Issue 11 defect 4: a relative working_dir is the config file's directory joined with it, whatever foundationd's
current directory (``/`` under systemd)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from agents.testing import DaemonProcess, wait_for
from daemon.config import load_config


def test_a_relative_working_dir_is_resolved_against_the_config_files_directory(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "conf" / "work").mkdir(parents=True)
    config = tmp_path / "conf" / "f.toml"
    config.write_text('[[supervisor.children]]\nname = "a"\ncommand = ["true"]\nworking_dir = "."\n'
                      '[[supervisor.children]]\nname = "b"\ncommand = ["true"]\nworking_dir = "work"\n'
                      '[[supervisor.children]]\nname = "c"\ncommand = ["true"]\nworking_dir = "/srv"\n'
                      '[[supervisor.children]]\nname = "d"\ncommand = ["true"]\n')
    monkeypatch.chdir("/")
    a, b, c, d = load_config(os.path.relpath(config, "/")).root.children
    assert a.working_dir == str(tmp_path / "conf")
    assert b.working_dir == str(tmp_path / "conf" / "work")
    assert c.working_dir == "/srv"
    assert d.working_dir is None  # unset: the daemon's own directory, as before


def test_a_daemon_started_elsewhere_runs_the_child_in_the_configs_directory(tmp_path: Path) -> None:
    marker = "pwd-marker"
    config = tmp_path / "app.toml"
    config.write_text(f'[[supervisor.children]]\nname = "here"\nworking_dir = "."\n'
                      f'command = ["{sys.executable}", "-c", "import os, time; open(\'{marker}\', \'w\'); '
                      f'time.sleep(1000)"]\n')
    d = DaemonProcess(tmp_path, None, name="elsewhere")
    d.config_path = config
    argv_cwd = tmp_path / "other"
    argv_cwd.mkdir()
    d.start(cwd=argv_cwd)
    wait_for((tmp_path / marker).exists, what="the child's file in the config's directory")
    assert not (argv_cwd / marker).exists()
    d.stop()
