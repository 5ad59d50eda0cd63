"""One control verb, both halves: the daemon's handler and ``foundationctl``'s arguments and rendering.

Each module in this package defines ``VERB``; the registry (``__init__``) lists them, and both the control server
(handlers, permissions) and ``foundationctl`` (parser, help) are built from it, so a verb is read in one file.

``access`` is the permission: ``read`` verbs are allowed to the configured ``control_group``; ``write`` verbs only
to root and the daemon's user, and logged; ``quiet`` verbs are write verbs logged at debug level (the data plane:
thousands a second).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ipc.control import ControlClient, Request
from ipc.errors import ErrorCode, FoundationError

Reply = Callable[[Any], Any]  # returns False once the client has gone
# A handler answers through ``reply`` (a result) or raises FoundationError; it may keep ``reply`` and call it
# later, when the operation it started has finished. ``ctx`` is the daemon, seen through the verb's own Protocol.
Handle = Callable[[Any, Request, Any, Reply], None]
Run = Callable[[ControlClient, argparse.Namespace], int]
Setup = Callable[[argparse.ArgumentParser], None]
Check = Callable[[argparse.ArgumentParser, argparse.Namespace], None]
Access = Literal["read", "write", "quiet"]


@dataclass(frozen=True)
class Verb:
    """``setup`` adds the verb's arguments; ``check`` rejects combinations argparse cannot express (it calls
    ``parser.error``) and runs before any connection is made, so a usage error is always exit 2; ``run`` talks
    to the daemon and returns the exit code. With ``takes_tail`` everything after the first ``--`` is passed
    verbatim as ``args.tail``."""

    name: str
    help: str
    access: Access
    handle: Handle
    run: Run
    setup: Setup | None = None
    check: Check | None = None
    takes_tail: bool = False
    usage: str | None = None
    read_ops: frozenset[str] = frozenset()  # a write verb's ``op`` values that only read (control_group may use them)
    local: Callable[[argparse.Namespace], int | None] | None = None  # runs first; an int: done, no daemon needed


def count_arg(args: dict[str, Any], key: str, default: int) -> int:
    """A non-negative integer argument (a number of lines, of events)."""
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FoundationError(ErrorCode.BAD_REQUEST, f"'{key}' must be a non-negative integer")
    return value


def str_arg(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value:
        raise FoundationError(ErrorCode.BAD_REQUEST, f"'{key}' must be a non-empty string")
    return value
