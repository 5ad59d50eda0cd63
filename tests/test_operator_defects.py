"""Issue 11's operator defects in the daemon's own verbs and entry point, each against a real daemon: a second
daemon on one state directory, `start` of a running child, `logs` of a supervisor, `call --timeout 0`, an empty
config, and a peer the socket refuses."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from helpers import ctl

from agents.testing import DaemonProcess, exited, wait_for
from daemon.control import cli
from ipc.errors import ErrorCode, FoundationError

SLEEPER = f"""
[[supervisor.children]]
name = "pipeline"
[[supervisor.children.children]]
name = "one"
command = ["{sys.executable}", "-u", "-c", "import time; print('one says hi'); time.sleep(1000)"]
[[supervisor.children.children]]
name = "two"
command = ["{sys.executable}", "-u", "-c", "import time; print('two says hi'); time.sleep(1000)"]
"""


def test_a_second_daemon_on_the_same_state_directory_exits_with_a_clear_error(start_daemon, tmp_path: Path) -> None:
    first: DaemonProcess = start_daemon(SLEEPER)
    second = DaemonProcess(tmp_path, SLEEPER, name="second")
    second.state_dir = first.state_dir  # its own runtime directory, the first one's state
    second.expect_exit(1).start(wait=False)
    assert second.wait_exit() != 0
    assert f"another foundationd (pid {first.proc.pid}) is running with state dir {first.state_dir}" in second.log()
    assert first.status()["tree"]["state"] == "running"
    second.stop()


def test_start_of_a_running_child_says_it_was_already_running(start_daemon) -> None:
    d: DaemonProcess = start_daemon(SLEEPER)
    pid = d.wait_running("one")
    out = ctl(d, "start", "one")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"one was already running (pid {pid})"
    assert d.pid("one") == pid


def test_logs_of_a_supervisor_and_without_a_name_merge_its_workers_output(start_daemon) -> None:
    d: DaemonProcess = start_daemon(SLEEPER)
    d.wait_running("two")
    wait_for(lambda: "two says hi" in ctl(d, "logs", "two").stdout, what="two's output")
    for args in (("logs", "pipeline"), ("logs",)):
        wait_for(lambda a=args: {"one | one says hi", "two | two says hi"} <= set(ctl(d, *a).stdout.splitlines()),
                 what=f"merged output of {args}")


def test_call_with_a_zero_timeout_is_a_usage_error(start_daemon) -> None:
    d: DaemonProcess = start_daemon(SLEEPER)
    out = ctl(d, "call", "one", "{}", "--timeout", "0")
    assert out.returncode == 2
    assert "--timeout must be a number of seconds in (0, 3600]" in out.stderr


def test_an_empty_config_starts_with_a_warning(start_daemon) -> None:
    d: DaemonProcess = start_daemon("[supervisor]\nstrategy = 'one_for_one'\n")
    d.wait_log("the config has no children: the tree is empty")
    assert d.status()["tree"]["children"] == []


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to become another user")
def test_a_peer_the_socket_refuses_gets_exit_1_and_who_is_allowed(start_daemon) -> None:
    """foundationctl runs in a forked child that became nobody (in-process: nobody may not be able to exec this
    venv's scripts, e.g. under a 0700 /root); its connect is refused by the directory's and socket's modes."""
    d: DaemonProcess = start_daemon(SLEEPER)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become nobody, run the CLI's main, report through the pipe
        code = 99
        try:
            sys.stderr = os.fdopen(write_end, "w")  # (pytest has replaced sys.stderr in this process)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            code = cli.main(["--runtime-dir", str(d.runtime_dir), "status"])
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as err:
        stderr = err.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1, stderr
    assert "error: permission_denied:" in stderr
    assert "allowed are root" in stderr


def test_status_pid_and_signal_of_one_child(start_daemon) -> None:
    d: DaemonProcess = start_daemon(SLEEPER)
    pid = d.wait_running("one")
    out = ctl(d, "status", "pipeline")
    assert out.returncode == 0, out.stderr
    assert "pipeline" in out.stdout
    assert f"pid {pid}" in out.stdout
    assert "root" not in out.stdout.split("\n", 1)[1]
    assert ctl(d, "status", "nosuch").returncode == 1
    assert ctl(d, "pid", "one").stdout.strip() == str(pid)
    assert ctl(d, "pid").stdout.strip() == str(d.proc.pid)
    out = ctl(d, "signal", "one", "KILL")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"sent SIGKILL to one (pid {pid})"
    d.wait_running("one", not_pid=pid)  # died of it; restarted as after any crash
    assert d.node("one")["restarts"] == 1
    assert ctl(d, "signal", "one", "NOPE").returncode == 2


def test_restart_of_several_names_all_and_a_supervisors_children(start_daemon) -> None:
    d: DaemonProcess = start_daemon(SLEEPER)
    one, two = d.wait_running("one"), d.wait_running("two")
    out = ctl(d, "restart", "pipeline/*")
    assert out.returncode == 0, out.stderr
    assert [line.split()[:2] for line in out.stdout.splitlines()] == [["restarted", "one"], ["restarted", "two"]]
    assert d.pid("one") != one
    assert d.pid("two") != two
    out = ctl(d, "stop", "two", "nosuch", "one")
    assert out.returncode == 1
    assert "error: no_such_child: nosuch:" in out.stderr
    assert d.node("one")["state"] == d.node("two")["state"] == "stopped"  # the others were carried out
    out = ctl(d, "start", "all")
    assert out.returncode == 0, out.stderr
    assert [line.split()[:2] for line in out.stdout.splitlines()] == [["started", "one"], ["started", "two"]]
    assert d.node("one")["state"] == d.node("two")["state"] == "running"


def test_logs_show_start_and_exit_markers_timestamps_and_the_daemons_own_log(start_daemon) -> None:
    d: DaemonProcess = start_daemon(SLEEPER)
    pid = d.wait_running("one")
    d.request("restart", name="one")
    lines = ctl(d, "logs", "one").stdout.splitlines()
    assert lines[0] == f"-- started (pid {pid})"
    assert "one says hi" in lines
    assert any(line.startswith("-- exited: ") for line in lines)
    stamped = ctl(d, "logs", "one", "--timestamps").stdout.splitlines()
    assert stamped[0].endswith(f" -- started (pid {pid})")
    assert stamped[0][:4].isdigit()  # 2026-12-04 03:55:01.123 -- started ...
    own = ctl(d, "logs", "(foundationd)").stdout
    assert "control: restart" in own


def test_shutdown_wait_returns_once_every_child_has_stopped(start_daemon) -> None:
    d: DaemonProcess = start_daemon(SLEEPER)
    pids = [d.wait_running("one"), d.wait_running("two")]
    out = ctl(d, "shutdown", "--wait")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "foundationd has shut down"
    assert all(exited(pid) for pid in pids)  # no waiting here: they were gone when the CLI returned
    assert d.wait_exit(timeout=10) == 0


def test_attach_takes_the_config_keys(start_daemon, tmp_path: Path) -> None:
    d: DaemonProcess = start_daemon(SLEEPER)
    work = tmp_path / "attached"
    work.mkdir()
    script = "import os, time; open('env', 'w').write(os.environ['GREETING']); time.sleep(1000)"
    out = ctl(d, "attach", "extra", "--env", "GREETING=hello", "--working-dir", str(work), "--set", "shutdown=2.5",
              "--set", 'restart="transient"', "--", sys.executable, "-c", script)
    assert out.returncode == 0, out.stderr
    wait_for(lambda: (work / "env").exists() and (work / "env").read_text() == "hello", what="the child's file")
    assert d.node("extra")["restart"] == "transient"
    bad = ctl(d, "attach", "typo", "--set", "shutdwn=1", "--", "sleep", "1")
    assert bad.returncode == 1
    assert "shutdwn: unknown key" in bad.stderr
    assert ctl(d, "attach", "x", "--set", "nonsense", "--", "true").returncode == 2


def test_save_writes_run_time_attaches_into_the_config_and_they_survive_a_restart(start_daemon,
                                                                                   tmp_path: Path) -> None:
    d: DaemonProcess = start_daemon("# my tree\n" + SLEEPER)
    assert d.config_path is not None
    before = d.config_path.read_text()
    out = ctl(d, "attach", "later", "--env", "A=1", "--set", "shutdown=2.5", "--", "sleep", "1000")
    assert out.returncode == 0, out.stderr
    assert ctl(d, "attach", "inner", "--parent", "pipeline", "--", "sleep", "1000").returncode == 0
    refused = ctl(d, "save")
    assert refused.returncode == 1
    assert "attached under a supervisor other than the root: inner" in refused.stderr
    assert d.config_path.read_text() == before  # nothing written
    d.request("detach", name="inner")
    saved = ctl(d, "save")
    assert saved.returncode == 0, saved.stderr
    assert saved.stdout.startswith(f"saved later into {d.config_path}")
    text = d.config_path.read_text()
    assert text.startswith(before)  # the file's own text and comments are kept
    assert Path(f"{d.config_path}.bak").read_text() == before
    assert ctl(d, "reload").returncode == 0  # the saved child is the config's now, not a stranger
    d.stop()
    again = DaemonProcess(tmp_path, None, name="again")
    again.config_path = d.config_path
    again.start()
    again.wait_running("later")
    assert ctl(again, "save").stdout.strip() == "nothing to save: no child attached at run time"
    again.stop()


def test_save_without_a_config_file_says_so(start_daemon) -> None:
    d: DaemonProcess = start_daemon(None)
    out = ctl(d, "save")
    assert out.returncode == 1
    assert "embedded config" in out.stderr


def test_wait_lets_a_slow_start_settle_past_the_usual_25_s(start_daemon) -> None:
    """The daemon holds the answer for the request's ``wait`` (--wait: up to an hour) instead of 25 s: checked on the
    wire with a small limit, and a bad value is refused before anything changes."""
    d: DaemonProcess = start_daemon(SLEEPER)
    d.wait_running("one")
    slow = 'import time; time.sleep(1.5); print("READY")'
    with d.client() as client:
        quick = client.request("attach", spec={"name": "slow", "command": [sys.executable, "-c", slow],
                                               "ready": "notify", "start_timeout": 30}, wait=0.2)
        assert quick["pending"] is True  # answered after 0.2 s, still starting
        with pytest.raises(FoundationError) as exc:
            client.request("restart", name="one", wait=0)
        assert exc.value.code is ErrorCode.BAD_REQUEST
    out = ctl(d, "restart", "one", "--wait")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("restarted one (pid ")
