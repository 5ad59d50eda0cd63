"""Monitors: which agent watches which, for a ``down`` notice when the watched one's process ends. Pure data.

    monitor {ref, target} ──target runs──> watch(watcher, ref, target)
                          └─not running──> down {reason: "noproc"} at once (the broker stages it)
    target exits ──> exited(target) ──> [(watcher, ref), ...] ──> down {ref, target, reason} to each watcher

A monitor fires once: it is removed when it fires, and a watcher's own monitors end with it (its successor
numbers its refs anew). Refs are numbered by each watcher, so a monitor's key is (watcher, ref).
"""

from __future__ import annotations


class Monitors:
    def __init__(self) -> None:
        self._targets: dict[tuple[str, int], str] = {}  # (watcher, ref) -> target

    def __len__(self) -> int:
        return len(self._targets)

    def watch(self, watcher: str, ref: int, target: str) -> None:
        self._targets[(watcher, ref)] = target

    def unwatch(self, watcher: str, ref: int) -> None:
        self._targets.pop((watcher, ref), None)

    def exited(self, name: str) -> list[tuple[str, int]]:
        """``name`` is gone: drop its own monitors and those on it; the latter's (watcher, ref) are to be told."""
        notify = []
        for (watcher, ref), target in list(self._targets.items()):
            if watcher == name:
                del self._targets[(watcher, ref)]
            elif target == name:
                del self._targets[(watcher, ref)]
                notify.append((watcher, ref))
        return notify
