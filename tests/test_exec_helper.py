"""foundation-exec (daemon/native/), the one exec between fork and a child's program, and its fallback chain."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from helpers import shell

from agents.testing import wait_for
from daemon.core.spec import WorkerSpec
from daemon.shell.process import find_exec_helper, start_process

HELPER = find_exec_helper()
needs_helper = pytest.mark.skipif(HELPER is None, reason="foundation-exec was not built (no C compiler at install)")


@needs_helper
def test_helper_execs_the_program_under_its_own_pid() -> None:
    out = subprocess.run([HELPER, str(os.getpid()), "/bin/sh", "-c", "echo $$"], capture_output=True, text=True,
                         check=True, timeout=10)
    assert out.stdout.strip().isdigit()


@needs_helper
def test_helper_refuses_when_its_parent_is_not_the_daemon() -> None:
    """The daemon died before the parent-death signal was armed: the child must not run on."""
    result = subprocess.run([HELPER, "1", "/bin/true"], check=False, timeout=10)
    assert result.returncode == 127


@needs_helper
def test_helper_arms_the_parent_death_signal() -> None:
    result = subprocess.run([HELPER, str(os.getpid()), "/bin/grep", "^PPid\\|^State", "/proc/self/status"],
                            capture_output=True, text=True, check=True, timeout=10)
    assert f"PPid:\t{os.getpid()}" in result.stdout
    # prctl(PR_GET_PDEATHSIG) of another process is not readable; the daemon tests below show its effect.


@needs_helper
def test_helper_passes_the_environment_and_arguments_as_given() -> None:
    out = subprocess.run([HELPER, str(os.getpid()), "/bin/sh", "-c", 'echo "$0|$1|$A"', "a b", ""],
                         env={"A": "x y"}, capture_output=True, text=True, check=True, timeout=10)
    assert out.stdout == "a b||x y\n"


@needs_helper
def test_helper_says_why_it_cannot_execute_the_program() -> None:
    result = subprocess.run([HELPER, str(os.getpid()), "/nonexistent/program"], capture_output=True, text=True,
                            check=False, timeout=10)
    assert result.returncode == 127
    assert result.stderr == "foundation-exec: cannot execute /nonexistent/program: No such file or directory\n"


@needs_helper
def test_helper_leaves_the_program_only_stdin_stdout_and_stderr() -> None:
    """What lets the daemon posix_spawn through it: nothing the daemon has open, inheritable or not, goes on."""
    read_fd, write_fd = os.pipe()
    high = os.dup2(write_fd, 900, inheritable=True)
    try:
        probe = "test ! -e /proc/self/fd/900 && test ! -e /proc/self/fd/$0"
        result = subprocess.run([HELPER, str(os.getpid()), "/bin/sh", "-c", probe, str(write_fd)],
                                pass_fds=(high, write_fd), check=False, timeout=10)
    finally:
        for fd in (read_fd, write_fd, high):
            os.close(fd)
    assert result.returncode == 0


@needs_helper
@pytest.mark.parametrize("cwd", [None, "/"], ids=["posix_spawn", "popen"])
def test_both_ways_of_starting_give_the_program_default_signals(cwd: str | None) -> None:
    """Python ignores SIGPIPE, glibc's posix_spawn child ignores its internal signals 32 and 33: none stays."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        pid, popen = start_process([HELPER, str(os.getpid()), "/bin/grep", "^Sig[IB]", "/proc/self/status"],
                                   {}, (write_fd, write_fd), cwd=cwd, helper=HELPER)
    finally:
        os.close(write_fd)
    assert (popen is None) == (cwd is None)
    with os.fdopen(read_fd, "rb") as out:
        lines = out.read().decode().split()
    code = popen.wait() if popen is not None else os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    assert code == 0
    assert lines == ["SigBlk:", "0000000000000000", "SigIgn:", "0000000000000000"]


@needs_helper
def test_shell_spawns_through_the_helper_when_it_is_there() -> None:
    argv = shell()._argv(WorkerSpec(name="x", command=("sleep", "1")))
    assert argv[:2] == [HELPER, str(os.getpid())]
    assert argv[2].endswith("/sleep")


def test_fallback_chain_without_the_helper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOUNDATION_EXEC_HELPER", "none")
    argv = shell()._argv(WorkerSpec(name="x", command=("sleep", "1")))
    assert Path(argv[0]).name == "setpriv"
    assert argv[1:3] == ["--pdeathsig", "KILL"]


@pytest.mark.parametrize("helper", ["built", "none"])
def test_no_child_outlives_a_sigkilled_daemon_either_way(start_daemon, monkeypatch: pytest.MonkeyPatch,
                                                         helper: str) -> None:
    if helper == "built" and HELPER is None:
        pytest.skip("foundation-exec was not built (no C compiler at install)")
    if helper == "none":
        monkeypatch.setenv("FOUNDATION_EXEC_HELPER", "none")
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "a"
        command = ["sleep", "1000"]
        [[supervisor.children]]
        name = "b"
        command = ["{sys.executable}", "-c", "import time; time.sleep(1000)"]
    """)
    pids = [daemon.wait_running("a"), daemon.wait_running("b")]
    old = daemon.pid("a")
    os.kill(old, signal.SIGKILL)
    pids.append(daemon.wait_running("a", not_pid=old))
    daemon.kill(signal.SIGKILL)
    daemon.wait_exit()

    def gone() -> bool:
        return not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)

    wait_for(gone, timeout=10, what="children gone with their daemon")
