"""Shared fixtures. ``foundation_daemon`` comes from Foundation's own pytest plugin (agents/pytest_plugin.py):
real daemons in temporary directories, checked on teardown for any process left behind. The plugin also judges
every daemon a test starts (through this fixture or a DaemonProcess of its own): an exit code other than 0, or
than one the test named with ``daemon.expect_exit``, or a traceback in the daemon's log fails the test.
Helpers shared by several test files (not fixtures) are in tests/helpers.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agents.testing import DaemonProcess


@pytest.fixture
def start_daemon(foundation_daemon: Callable[..., DaemonProcess]) -> Callable[..., DaemonProcess]:
    """Start a foundationd on a TOML config text (dedented); returns the running DaemonProcess."""
    return foundation_daemon
