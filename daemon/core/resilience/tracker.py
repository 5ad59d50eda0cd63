"""The error tracker: errors counted by code, category and agent over a sliding window; a threshold crossed is an
alert (once, until the count falls below it again). Pure, the time passed in.

    report(now, code, category, agent, dependency) ──> Window per (code, category, agent)
                                                   └─> thresholds by code or by category ──> Alert (edge-triggered)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from daemon.core.resilience.window import Window


@dataclass(frozen=True)
class Alert:
    key: str  # the code or category whose threshold was crossed
    count: int
    threshold: int
    window: float


@dataclass
class ErrorTracker:
    window: float = 60.0
    thresholds: dict[str, int] = field(default_factory=dict)  # code or category -> count in the window
    _groups: dict[tuple[str, str, str], Window] = field(default_factory=dict)
    _totals: dict[tuple[str, str, str], int] = field(default_factory=dict)
    _last: dict[tuple[str, str, str], tuple[float, str]] = field(default_factory=dict)  # -> (when, message)
    _raised: set[str] = field(default_factory=set)
    MAX_GROUPS = 1000  # distinct (code, category, agent): the oldest go beyond it

    def report(self, now: float, code: str, category: str, agent: str, *, message: str = "", count: int = 1
               ) -> list[Alert]:
        key = (code, category, agent)
        group = self._groups.get(key)
        if group is None:
            if len(self._groups) >= self.MAX_GROUPS:
                oldest = min(self._last, key=lambda k: self._last[k][0])
                for table in (self._groups, self._totals, self._last):
                    table.pop(oldest, None)
            group = self._groups[key] = Window(self.window, 12)
        group.add(now, count)
        self._totals[key] = self._totals.get(key, 0) + count
        self._last[key] = (now, message)
        return self.check(now)

    def check(self, now: float) -> list[Alert]:
        out = []
        for name, threshold in self.thresholds.items():
            count = self._count(now, name)
            if count >= threshold and name not in self._raised:
                self._raised.add(name)
                out.append(Alert(name, count, threshold, self.window))
            elif count < threshold:
                self._raised.discard(name)
        return out

    def _count(self, now: float, name: str) -> int:
        return int(sum(w.totals(now)[0] for (code, category, _), w in self._groups.items() if name in (code, category)))

    def groups(self, now: float) -> list[dict[str, object]]:
        """Every group, the most frequent in the window first."""
        rows = []
        for key, group in self._groups.items():
            code, category, agent = key
            when, message = self._last[key]
            rows.append({"code": code, "category": category, "agent": agent, "in_window": int(group.totals(now)[0]),
                         "total": self._totals[key], "last_s_ago": round(now - when, 3), "last_message": message})
        rows.sort(key=lambda r: (-int(str(r["in_window"])), -int(str(r["total"]))))
        return rows
