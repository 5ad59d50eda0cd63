"""Token buckets (rate limits) and retry budgets: pure, the time passed in.

    TokenBucket: ``burst`` tokens at most, ``rate`` added a second; ``take(now, n)`` grants n tokens if there are
    that many, else answers how long until there will be (retry-after). Decided in the daemon, one at a time, so
    the grants of every agent on the host together stay within ``burst + rate * t`` over any t seconds.

    Leases (``lease`` > 0): a granted request also takes up to ``lease`` more whole tokens the bucket has, for the
    agent to spend by itself within ``lease_for`` seconds of the grant (then they are void). A token is still taken
    from the bucket before it is spent, at most ``lease_for`` earlier, so the host-wide bound becomes
    ``burst + rate * (t + lease_for)``; what it buys is one round trip to the daemon per ``lease + 1`` tokens.

    RetryBudget (Finagle's): over the last ``window`` seconds, retries may add at most ``ratio`` of the calls made,
    plus ``minimum_per_second`` (so that a dependency called rarely can still be retried). Calls are deposited as
    they are reported; each retry withdraws one, or is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from daemon.core.resilience.window import Window


@dataclass(frozen=True)
class LimitSettings:
    rate: float  # tokens a second
    burst: float  # the bucket's size (at least 1)
    lease: int = 0  # whole tokens a grant may add for the agent to spend by itself (0: none)
    lease_for: float = 0.1  # seconds those stay good


@dataclass
class TokenBucket:
    name: str
    settings: LimitSettings
    tokens: float = -1.0  # -1: full, set at the first take
    last: float = 0.0
    granted: int = 0
    refused: int = 0
    leased: float = 0.0

    def take(self, now: float, count: float = 1.0) -> tuple[bool, float]:
        """(granted, retry_after seconds); a count over the burst is never granted (retry_after -1)."""
        s = self.settings
        if count > s.burst:
            self.refused += 1
            return False, -1.0
        if self.tokens < 0:
            self.tokens, self.last = s.burst, now
        self.tokens = min(s.burst, self.tokens + max(0.0, now - self.last) * s.rate)
        self.last = now
        if self.tokens >= count:
            self.tokens -= count
            self.granted += 1
            return True, 0.0
        self.refused += 1
        return False, (count - self.tokens) / s.rate if s.rate > 0 else -1.0

    def take_lease(self, now: float, count: float = 1.0) -> tuple[float, float]:
        """As ``take``, and a grant adds up to ``settings.lease`` whole tokens more if the bucket has them:
        (tokens granted, 0 when refused; retry_after seconds)."""
        granted, retry_after = self.take(now, count)
        if not granted:
            return 0.0, retry_after
        more = float(min(self.settings.lease, math.floor(self.tokens)))
        if more > 0:
            self.tokens -= more
            self.leased += more
        return count + more, 0.0

    def configure(self, settings: LimitSettings) -> None:
        if settings != self.settings:
            self.settings = settings
            self.tokens = min(self.tokens, settings.burst)

    def describe(self, now: float) -> dict[str, object]:
        s = self.settings
        available = s.burst if self.tokens < 0 else min(s.burst, self.tokens + max(0.0, now - self.last) * s.rate)
        return {"name": self.name, "rate": s.rate, "burst": s.burst, "available": round(available, 3),
                "granted": self.granted, "refused": self.refused, "lease": s.lease, "leased": int(self.leased)}


@dataclass(frozen=True)
class BudgetSettings:
    ratio: float = 0.2  # retries may add this share of the calls in the window
    minimum_per_second: float = 1.0  # ... plus this many a second whatever the calls
    window: float = 10.0


@dataclass
class RetryBudget:
    settings: BudgetSettings = field(default_factory=BudgetSettings)
    allowed: int = 0
    refused: int = 0
    _window: Window | None = None  # (calls, retries)

    @property
    def window(self) -> Window:
        if self._window is None:
            self._window = Window(self.settings.window, 10, fields=2)
        return self._window

    def deposit(self, now: float, calls: int) -> None:
        if calls:
            self.window.add(now, calls, 0)

    def withdraw(self, now: float) -> bool:
        calls, retries = self.window.totals(now)
        s = self.settings
        if retries + 1 <= s.minimum_per_second * s.window + s.ratio * calls:
            self.window.add(now, 0, 1)
            self.allowed += 1
            return True
        self.refused += 1
        return False

    def configure(self, settings: BudgetSettings) -> None:
        if settings != self.settings:
            self.settings, self._window = settings, None

    def describe(self, now: float) -> dict[str, object]:
        calls, retries = self.window.totals(now)
        s = self.settings
        return {"calls": int(calls), "retries": int(retries), "allowed": self.allowed, "refused": self.refused,
                "left": max(0, int(s.minimum_per_second * s.window + s.ratio * calls - retries))}
