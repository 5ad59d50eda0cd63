"""The one limit every Unix socket foundationd binds shares: 107 bytes of path (sun_path holds 108 with its NUL).

Under a deep runtime directory (a test's tmp path, a long $XDG_RUNTIME_DIR) bind fails with a bare
``OSError: AF_UNIX path too long`` (zmq: "File name too long") from whichever socket comes first. Each bind site
asks here first, so that foundationd stops at start-up with one line naming the path, its length and the limit
(exit 1), and a socket made later (an agent user's broker socket) fails its spawn with the same words.
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_SOCKET_PATH = 107  # sizeof(struct sockaddr_un.sun_path) on Linux, less the terminating NUL


def socket_path_problem(path: Path | str) -> str | None:
    """Why ``path`` cannot name a Unix socket, or None when it can."""
    size = len(os.fsencode(str(path)))
    if size <= MAX_SOCKET_PATH:
        return None
    return (f"cannot bind {path}: the path is {size} bytes, over the {MAX_SOCKET_PATH}-byte limit of a Unix socket "
            "path; choose a shorter runtime directory (--runtime-dir, or runtime_dir in the config)")


def check_startup_socket(path: Path | str) -> None:
    """At start-up: exit 1 with one line (SystemExit's message, printed by the interpreter) rather than a traceback."""
    problem = socket_path_problem(path)
    if problem is not None:
        raise SystemExit(f"foundationd: {problem}")


def check_socket(path: Path | str) -> None:
    """Later (a socket made for a spawn): an OSError the caller turns into that spawn's error."""
    problem = socket_path_problem(path)
    if problem is not None:
        raise OSError(36, problem)  # ENAMETOOLONG
