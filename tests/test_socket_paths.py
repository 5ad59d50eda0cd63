"""A runtime directory too deep for a Unix socket path: foundationd stops at start-up with one line naming the path
and the 107-byte limit (exit 1), whichever of its sockets (notify, broker, control) is the first too long."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import SLEEP

from agents.testing import DaemonProcess
from daemon.shell.socket_path import MAX_SOCKET_PATH, check_socket, socket_path_problem

CONFIG = f'[[supervisor.children]]\nname = "w"\ncommand = {SLEEP}\n'


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.stop()


def start_with_runtime_dir_of(tmp_path: Path, length: int, started: list[DaemonProcess]) -> DaemonProcess:
    """A daemon whose runtime directory's path is ``length`` bytes long; it is expected to fail."""
    base = tmp_path / "b"
    base.mkdir()
    name = "x" * (length - len(str(base)) - len("/-run"))
    daemon = DaemonProcess(base, CONFIG, name=name).expect_exit(1)
    assert len(str(daemon.runtime_dir)) == length
    started.append(daemon)
    return daemon.start(wait=False)


@pytest.mark.parametrize(("length", "socket"), [(96, "notify.sock"), (150, "notify.sock"), (95, "control.sock")])
def test_a_socket_path_over_the_limit_stops_foundationd_with_one_line(
    tmp_path: Path, daemons: list[DaemonProcess], length: int, socket: str
) -> None:
    """96 bytes + "/notify.sock" is 108, one too many (notify is bound first, then broker.sock of the same length);
    at 95 only "control.sock", one byte longer, is over."""
    daemon = start_with_runtime_dir_of(tmp_path, length, daemons)
    assert daemon.wait_exit() == 1
    path = daemon.runtime_dir / socket
    lines = daemon.log().strip().splitlines()
    assert lines[-1] == (
        f"foundationd: cannot bind {path}: the path is {len(str(path))} bytes, over the 107-byte limit of a Unix "
        "socket path; choose a shorter runtime directory (--runtime-dir, or runtime_dir in the config)"
    )
    assert "Traceback" not in daemon.log()


def test_the_limit_itself_is_allowed() -> None:
    assert socket_path_problem("/" + "a" * (MAX_SOCKET_PATH - 1)) is None
    assert socket_path_problem("/" + "a" * MAX_SOCKET_PATH) is not None
    assert socket_path_problem("/" + "é" * 60) is not None  # bytes, not characters


def test_a_socket_made_later_fails_as_an_os_error_with_the_same_words() -> None:
    with pytest.raises(OSError, match="over the 107-byte limit") as info:
        check_socket("/" + "a" * 200 + "/broker-65534.sock")
    assert info.value.errno == 36
