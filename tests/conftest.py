"""Shared fixtures: real daemons in temporary directories, checked for leftovers on teardown."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.testing import DaemonProcess

PY = sys.executable


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[DaemonProcess]]:
    """A list the test appends DaemonProcess objects to; each is stopped and leak-checked at the end."""
    started: list[DaemonProcess] = []
    yield started
    errors = []
    for daemon in started:
        try:
            daemon.stop()
        except AssertionError as exc:
            errors.append(str(exc))
    assert not errors, errors


@pytest.fixture
def start_daemon(tmp_path: Path, daemons: list[DaemonProcess]):
    """Start a foundationd on a TOML config text (dedented); returns the running DaemonProcess."""
    counter = iter(range(1000))

    def start(config: str | None, wait: bool = True) -> DaemonProcess:
        daemon = DaemonProcess(tmp_path, config, name=f"d{next(counter)}")
        daemons.append(daemon)
        return daemon.start(wait=wait)

    return start
