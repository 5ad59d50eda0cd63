"""A pytest plugin for users' tests (registered through the ``pytest11`` entry point).

``foundation_daemon`` starts a real foundationd in a temporary directory on a config text and, at the
end of the test, stops it and fails the test if any process it started is left behind:

    def test_counter(foundation_daemon):
        d = foundation_daemon('''
            [[supervisor.children]]
            name = "counter"
            agent = "agents.examples.counter:Counter"
        ''')
        d.request("send", name="counter", body={"add": 1})

Every daemon a test starts through ``agents.testing.DaemonProcess`` (by this fixture or directly) is also judged
after the test, once its fixtures are torn down: one still running is stopped, and the test fails if a daemon
exited non-zero or logged a Python traceback of its own. A test that makes its daemon fail on purpose says so
with ``daemon.expect_exit(code)``; death by ``daemon.kill(SIGKILL)`` is expected without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agents.testing import DaemonProcess, tracking_daemons


@pytest.fixture(autouse=True)
def _foundation_daemons_judged() -> Iterator[None]:
    """Autouse, so it is set up before and torn down after every fixture that starts daemons."""
    with tracking_daemons() as started:
        yield
    errors = []
    for daemon in started:
        if daemon.proc is not None and daemon.proc.poll() is None:
            try:
                daemon.stop()
            except AssertionError as exc:
                errors.append(str(exc))
        errors += daemon.problems()
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


@pytest.fixture
def foundation_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []
    counter = iter(range(1_000_000))

    def start(config: str | None, wait: bool = True) -> DaemonProcess:
        daemon = DaemonProcess(tmp_path, config, name=f"d{next(counter)}")
        started.append(daemon)
        return daemon.start(wait=wait)

    yield start
    errors = []
    for daemon in started:
        try:
            daemon.stop()
        except AssertionError as exc:
            errors.append(str(exc))
    assert not errors, errors
