"""``foundationd --check`` validates a config without starting anything (as ``nginx -t``), including that each
agent's ``module:Class`` loads (in a child interpreter), and ``agents.loadcheck`` on its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agents.loadcheck import check_agent_importable

FOUNDATIOND = str(Path(sys.executable).with_name("foundationd"))


def check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FOUNDATIOND, "--check", "--config", str(config)], capture_output=True, text=True,
                          timeout=60, check=False)


def test_a_good_config_passes_and_starts_nothing(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text("from agents.sdk import Agent\n\nclass Mine(Agent):\n    pass\n")
    config = tmp_path / "ok.toml"
    config.write_text('[[supervisor.children]]\nname = "a"\nagent = "mine:Mine"\nworking_dir = "."\n'
                      '[[supervisor.children]]\nname = "b"\ncommand = ["sleep", "1000"]\n')
    out = check(config)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"config ok: {config}: 2 children"


def test_every_problem_is_named_and_the_exit_is_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[[supervisor.children]]\nname = "nope"\nagent = "agents.examples.counter:Nope"\n'
                      '[[supervisor.children]]\nname = "ghost"\ncommand = ["/no/such/program"]\n'
                      '[[supervisor.children]]\nname = "away"\ncommand = ["true"]\nworking_dir = "/no/such/dir"\n')
    out = check(config)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"foundationd: {config}: nope: agents.examples.counter:Nope: module 'agents.examples.counter' has no "
        "attribute 'Nope'",
        f"foundationd: {config}: ghost: /no/such/program: not an executable file",
        f"foundationd: {config}: away: working_dir /no/such/dir: not a directory",
    ]


def test_an_invalid_config_is_the_usual_one_line_error(tmp_path: Path) -> None:
    config = tmp_path / "typo.toml"
    config.write_text('[[supervisor.children]]\nname = "a"\ncomand = ["true"]\n')
    out = check(config)
    assert out.returncode == 2
    assert "comand: unknown key" in out.stderr


def test_loadcheck_runs_the_import_in_a_child_process(tmp_path: Path) -> None:
    (tmp_path / "sideeffect.py").write_text("import sys\nsys.modules['marker_loaded_by_check'] = sys\n"
                                            "from agents.sdk import Agent\nclass A(Agent):\n    pass\n")
    assert check_agent_importable("sideeffect:A", tmp_path) is None
    assert "marker_loaded_by_check" not in sys.modules
    assert check_agent_importable("sideeffect:B", tmp_path) == (
        "sideeffect:B: module 'sideeffect' has no attribute 'B'")
    (tmp_path / "raises.py").write_text("raise ValueError('no config here')\n")
    assert check_agent_importable("raises:A", tmp_path) == "raises:A: importing it raised ValueError: no config here"


def test_a_log_file_foundationd_could_not_write_is_named(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("a file where a directory should be\n")
    (tmp_path / "adir.log").mkdir()
    config = tmp_path / "logs.toml"
    config.write_text('[daemon]\nlog_dir = "logs/new"\n'  # missing directories are created: fine
                      '[[supervisor.children]]\nname = "ok"\ncommand = ["true"]\n'
                      '[[supervisor.children]]\nname = "under"\ncommand = ["true"]\nlog_file = "../../plain/x.log"\n'
                      '[[supervisor.children]]\nname = "dir"\ncommand = ["true"]\nlog_file = "../../adir.log"\n')
    out = check(config)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"foundationd: {config}: under: log file {tmp_path}/plain/x.log: cannot be created in {tmp_path}/plain",
        f"foundationd: {config}: dir: log file {tmp_path}/adir.log: not a regular file foundationd can write",
    ]
    assert not (tmp_path / "logs").exists(), "--check creates nothing"
