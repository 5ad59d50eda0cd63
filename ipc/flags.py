"""Feature flags as data, shared by the daemon (which owns them) and the SDK (which answers from its copy).

    foundationd: FlagService ──hello: welcome {flags}──────────────> agent runtime: FlagTable
                             ──change: info {"flags": {...}}───────>   └─ Agent.enabled(flag, id), locally

A flag is a plain dict ``{"kind": "boolean" | "percentage", "percent": 0..100, "killed": bool}``. An id is on when
the flag is not killed and ``bucket(name, id) <= percent`` (DESIGN 3.8), with Unleash's gradual-rollout bucket:
``murmur3_32(f"{name}:{id}", seed 0) % 100 + 1``, 1..100. Since an id's bucket never changes, raising the
percentage never turns an id off, and lowering it turns off only the ids above the new line. ``on`` is 100 %,
``off`` 0 %. A killed flag is off everywhere, whatever its percentage, until it is revived.

The table that travels is ``{"version": N, "flags": {name: flag}}``: ``version`` grows with every change, so an
update that arrives after a newer table (a push queued before the agent's hello, delivered after it) is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import mmh3

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # no ':' (it separates the name from the id)
KINDS = ("boolean", "percentage")
PUSH_KEY = "flags"  # an info message {"flags": table} carries a new table to an agent


def bucket(name: str, ident: str) -> int:
    """The id's bucket for this flag, 1..100 (Unleash's ``normalizedValue``: murmur3 x86 32-bit, seed 0)."""
    return int(mmh3.hash(f"{name}:{ident}", 0, signed=False)) % 100 + 1


def evaluate(flag: Mapping[str, Any] | None, name: str, ident: str) -> bool:
    """Whether ``ident`` has flag ``name`` on; an unknown flag is off."""
    if flag is None or flag.get("killed"):
        return False
    percent = int(flag.get("percent", 0))
    if percent >= 100:
        return True
    if percent <= 0:
        return False
    return bucket(name, ident) <= percent


def check_name(name: object) -> str:
    """The name, or ValueError saying what a flag name may be."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValueError(f"invalid flag name {name!r}: use letters, digits, '_', '.', '-' (no ':'), up to 128")
    return name


def parse_value(value: object) -> tuple[str, int]:
    """``on``/``off``/``true``/``false`` or a boolean -> (boolean, 100/0); a percentage 0..100 (``30``, ``"30"``,
    ``"30%"``) -> (percentage, 30). ValueError naming the accepted forms otherwise."""
    if isinstance(value, bool):
        return "boolean", 100 if value else 0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("on", "true"):
            return "boolean", 100
        if text in ("off", "false"):
            return "boolean", 0
        text = text.removesuffix("%")
        if text.isdigit():
            value = int(text)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 100:
        return "percentage", value
    raise ValueError(f"expected on, off or a percentage from 0 to 100, got {value!r}")


def describe(flag: Mapping[str, Any]) -> str:
    """``on``, ``off``, ``30%``, with ``(killed)`` after a killed one."""
    percent = int(flag.get("percent", 0))
    text = ("on" if percent >= 100 else "off") if flag.get("kind") == "boolean" else f"{percent}%"
    return text + (" (killed)" if flag.get("killed") else "")


class FlagTable:
    """An agent's copy of the daemon's flags, replaced whole by each newer table."""

    def __init__(self) -> None:
        self.version = -1
        self.flags: dict[str, dict[str, Any]] = {}

    def replace(self, table: object) -> bool:
        """Take ``table`` (``{"version", "flags"}``) if it is newer than ours; True if taken."""
        if not isinstance(table, dict):
            return False
        version, flags = table.get("version"), table.get("flags")
        if not isinstance(version, int) or not isinstance(flags, dict) or version <= self.version:
            return False
        self.version, self.flags = version, {k: v for k, v in flags.items() if isinstance(v, dict)}
        return True

    def take(self, info: object) -> bool:
        """True if ``info`` (an info message's body) is a flags push: it is then the runtime's, not the agent's."""
        if isinstance(info, dict) and len(info) == 1 and PUSH_KEY in info:
            self.replace(info[PUSH_KEY])
            return True
        return False

    def enabled(self, name: str, ident: str) -> bool:
        return evaluate(self.flags.get(name), name, ident)
