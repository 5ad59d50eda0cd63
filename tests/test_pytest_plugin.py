"""The pytest plugin (agents/pytest_plugin.py) run as users get it: a pytest of its own, loading the plugin through
its entry point, on tests whose daemons end well or badly."""

from __future__ import annotations

import shutil
import tempfile

import pytest

from agents.testing import tracebacks

pytest_plugins = ["pytester"]

USERS_TESTS = '''
import json
import signal
import sys

from agents.testing import DaemonProcess

SLEEPER = """
    [[supervisor.children]]
    name = "sleeper"
    command = ["sleep", "1000"]
"""
FAILING = """
    [supervisor]
    intensity = 0
    [[supervisor.children]]
    name = "quitter"
    command = ["false"]
"""
CRASHING_CHILD = f"""
    [[supervisor.children]]
    name = "crasher"
    restart = "temporary"
    command = {json.dumps([sys.executable, "-c", "raise ValueError('a child of its own')"])}
"""


def test_clean(foundation_daemon):
    daemon = foundation_daemon(SLEEPER)
    daemon.wait_running("sleeper")


def test_exit_non_zero(foundation_daemon):
    daemon = foundation_daemon(FAILING, wait=False)
    assert daemon.wait_exit() == 1


def test_exit_non_zero_expected(foundation_daemon):
    daemon = foundation_daemon(FAILING, wait=False).expect_exit(1)
    assert daemon.wait_exit() == 1


def test_sigkilled_by_the_test(foundation_daemon):
    daemon = foundation_daemon(SLEEPER)
    daemon.kill(signal.SIGKILL)
    assert daemon.wait_exit() == -signal.SIGKILL


def test_traceback_of_the_daemon(foundation_daemon):
    daemon = foundation_daemon(SLEEPER)
    with open(daemon.log_path, "a") as log:  # what log.exception or an uncaught error writes to its stderr
        log.write("foundationd: ERROR: control: status failed\\n"
                  "Traceback (most recent call last):\\n"
                  '  File "daemon/control/server.py", line 1, in handle\\n'
                  "KeyError: 'tree'\\n")


def test_traceback_of_a_child(foundation_daemon):
    daemon = foundation_daemon(CRASHING_CHILD)
    daemon.wait_log("crasher ! ValueError: a child of its own")  # (from its stderr: "!" after the name)


def test_direct_daemon_left_running(tmp_path):
    DaemonProcess(tmp_path, SLEEPER).start().wait_running("sleeper")


def test_direct_daemon_exit_non_zero(tmp_path):
    DaemonProcess(tmp_path, FAILING).start(wait=False).wait_exit()
'''


@pytest.mark.slow
def test_the_plugin_fails_a_test_whose_daemon_exited_non_zero_or_logged_a_traceback(pytester: pytest.Pytester
                                                                                      ) -> None:
    pytester.makepyfile(test_users=USERS_TESTS)
    # Short temporary paths: pytester's own are too long for the daemon's AF_UNIX sockets (108 bytes).
    basetemp = tempfile.mkdtemp(prefix="fp-")
    try:
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-ra", "-o", "timeout=45",
                                               f"--basetemp={basetemp}/t")
    finally:
        shutil.rmtree(basetemp)
    errors = {line.split()[1].split("::")[1] for line in result.outlines if line.startswith("ERROR test_users.py")}
    assert errors == {"test_exit_non_zero", "test_traceback_of_the_daemon", "test_direct_daemon_exit_non_zero"}, \
        result.stdout.str()
    result.assert_outcomes(passed=8, errors=3)
    result.stdout.fnmatch_lines(["*foundationd (pid *) exited with 1; a test that means it calls expect_exit(1)*"])
    result.stdout.fnmatch_lines(["*foundationd logged a traceback*", "Traceback (most recent call last):",
                                 '  File "daemon/control/server.py", line 1, in handle', "KeyError: 'tree'"])


def test_only_the_daemons_own_tracebacks_count() -> None:
    log = ("foundationd: INFO: started a (pid 1)\n"
           "a | Traceback (most recent call last):\n"
           'a |   File "x.py", line 1, in <module>\n'
           "a | ValueError: mine\n"
           "foundationd: ERROR: broker: cast frame from 'a' failed\n"
           "Traceback (most recent call last):\n"
           '  File "daemon/broker/broker.py", line 2, in on_frame\n'
           "    route(frame)\n"
           "TypeError: boom\n"
           "foundationd: INFO: tree started\n"
           "<3>Traceback (most recent call last):\n"
           '  File "daemon/main.py", line 3, in run\n'
           "SystemError: journal\n")
    assert tracebacks(log) == [
        'Traceback (most recent call last):\n  File "daemon/broker/broker.py", line 2, in on_frame\n'
        "    route(frame)\nTypeError: boom",
        '<3>Traceback (most recent call last):\n  File "daemon/main.py", line 3, in run\nSystemError: journal',
    ]
    assert tracebacks("a | Traceback (most recent call last):\n") == []
    assert tracebacks("a ! Traceback (most recent call last):\n") == []  # a child's stderr line
