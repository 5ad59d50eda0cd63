"""The daemon's flags as a pure value: each operation returns the changes it made, the shell persists, publishes
and pushes them (daemon/services/flags.py).

    set / kill / revive / delete / apply(stage values) ──> FlagSet ──> [Change] ──> store, flag_changed, agents

``version`` grows by one with every operation that changed something (never for a no-op), and is the version of
the table the agents get: an agent keeps the newest table it has seen (ipc/flags.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ipc.flags import check_name, describe, parse_value

Flag = dict[str, Any]


@dataclass(frozen=True)
class Change:
    name: str
    old: Flag | None  # None: the flag did not exist
    new: Flag | None  # None: deleted

    def event(self) -> dict[str, Any]:
        """The fields of its ``flag_changed`` event."""
        new = self.new
        return {"name": self.name, "old": describe(self.old) if self.old else None,
                "new": describe(new) if new else None,
                "percent": new["percent"] if new else None, "killed": bool(new and new.get("killed"))}


class FlagSet:
    def __init__(self, flags: Mapping[str, Flag] | None = None, version: int = 0) -> None:
        self.flags: dict[str, Flag] = {name: dict(flag) for name, flag in (flags or {}).items()}
        self.version = version

    def table(self) -> dict[str, Any]:
        """What agents get: ``{"version", "flags"}`` (copies)."""
        return {"version": self.version, "flags": {name: dict(flag) for name, flag in sorted(self.flags.items())}}

    def set(self, name: str, value: object) -> list[Change]:
        """``on``, ``off`` or a percentage; a killed flag stays killed (off) with its new value underneath."""
        kind, percent = parse_value(value)
        old = self.flags.get(check_name(name))
        return self._put(name, {"kind": kind, "percent": percent, "killed": bool(old and old.get("killed"))})

    def kill(self, name: str) -> list[Change]:
        """Force the flag off everywhere (a flag not seen before is created killed, at 0 %)."""
        old = self.flags.get(check_name(name)) or {"kind": "boolean", "percent": 0}
        return self._put(name, {**old, "killed": True})

    def revive(self, name: str) -> list[Change]:
        """Lift the kill switch: the flag is back at its percentage. KeyError for an unknown flag."""
        return self._put(name, {**self.flags[name], "killed": False})

    def delete(self, name: str) -> list[Change]:
        old = self.flags.pop(name, None)
        if old is None:
            return []
        self.version += 1
        return [Change(name, old, None)]

    def apply(self, values: Mapping[str, object]) -> list[Change]:
        """A stage's values (``{name: on|off|percent}``), all in one version; kill switches stay as they are."""
        changes: list[Change] = []
        for name, value in values.items():
            kind, percent = parse_value(value)
            old = self.flags.get(name)
            new = {"kind": kind, "percent": percent, "killed": bool(old and old.get("killed"))}
            if old != new:
                self.flags[name] = new
                changes.append(Change(name, old, new))
        if changes:
            self.version += 1
        return changes

    def seed(self, values: Mapping[str, object]) -> list[Change]:
        """Flags declared in the config: only those not known yet (what was set at run time wins)."""
        return self.apply({name: value for name, value in values.items() if name not in self.flags})

    def _put(self, name: str, new: Flag) -> list[Change]:
        old = self.flags.get(name)
        if old == new:
            return []
        self.flags[name] = new
        self.version += 1
        return [Change(name, old, new)]
