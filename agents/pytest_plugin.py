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
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agents.testing import DaemonProcess


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
