"""A circuit breaker as a pure state machine over plain data and the time passed in (DESIGN 3.7, STYLE 18).

                 failure rate >= failure_rate, or slow-call rate >= slow_call_rate,
                 over the window, once it holds >= minimum_calls calls
       ┌────────┐ ───────────────────────────────────────────────────> ┌──────┐
       │ closed │                                                      │ open │ <── a trial fails (or is not
       └────────┘ <──── every trial succeeded ───┐                     └──────┘     reported in trial_timeout)
            ^                                ┌───────────┐  open_for has passed │
            │                                │ half_open │ <────────────────────┘
            │ close / reset                  └───────────┘  trial_calls permits, one caller each (single flight)
       ┌──────────┐
       │ isolated │ <── isolate (held open by an operator until close or reset); ``open`` trips it as failures would
       └──────────┘

The protected call runs in the caller (an agent); only the decision lives here. Closed: callers do not ask, they
report outcomes in batches (``record``), and learn of a change when the daemon pushes it. Open: callers refuse by
themselves until ``open_until``. Half-open: each caller asks ``permit``; at most ``trial_calls`` trials are out at
once and each is reported with its token (``trial_done``). Business and validation errors are not failures: the
caller counts them as calls that succeeded (the dependency answered). Every transition returns a ``Change``, which
the shell turns into an event, a push to agents and a write to disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from daemon.core.resilience.window import Window


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    ISOLATED = "isolated"


@dataclass(frozen=True)
class BreakerSettings:
    failure_rate: float = 0.5  # share of failed calls in the window that opens the breaker
    slow_call_rate: float = 1.0  # share of slow calls that opens it (1.0: only when every call is slow)
    slow_call_duration: float = 5.0  # seconds: a call that takes longer is slow
    minimum_calls: int = 10  # calls the window must hold before a rate counts
    window: float = 10.0  # seconds, counted in ``buckets`` buckets
    buckets: int = 10
    open_for: float = 5.0  # seconds open before trial calls are let through (half-open)
    trial_calls: int = 1  # trials in half-open: all must succeed to close
    trial_timeout: float = 30.0  # a trial not reported within this many seconds failed


@dataclass(frozen=True)
class Change:
    name: str
    old: BreakerState
    new: BreakerState
    reason: str


@dataclass(frozen=True)
class Permit:
    allowed: bool
    state: BreakerState
    trial: int | None = None  # the token of a half-open trial, to report with its outcome
    retry_after: float = 0.0  # when refused: seconds until a trial may be let through (0: unknown)


@dataclass
class Breaker:
    name: str
    settings: BreakerSettings = field(default_factory=BreakerSettings)
    state: BreakerState = BreakerState.CLOSED
    open_until: float = 0.0  # open: when half-open begins
    changed_at: float = 0.0
    trials: dict[int, float] = field(default_factory=dict)  # token -> deadline of each trial out
    trial_successes: int = 0
    calls: int = 0  # totals since the daemon started (metrics)
    failures: int = 0
    slow: int = 0
    opened: int = 0  # times it opened
    _next_token: int = 0
    _window: Window | None = None

    @property
    def window(self) -> Window:
        if self._window is None:
            self._window = Window(self.settings.window, self.settings.buckets, fields=3)
        return self._window

    def configure(self, settings: BreakerSettings) -> None:
        if settings != self.settings:
            self.settings = settings
            self._window = None  # a new length or bucket count: count afresh

    # ---- what callers ask and tell ----

    def permit(self, now: float) -> tuple[Permit, list[Change]]:
        """May a call go through now? Closed: yes. Open (not yet due): no. Half-open: a trial, if one is free."""
        changes = self.tick(now)
        if self.state is BreakerState.CLOSED:
            return Permit(True, self.state), changes
        if self.state is BreakerState.HALF_OPEN and len(self.trials) < self.settings.trial_calls:
            self._next_token += 1
            self.trials[self._next_token] = now + self.settings.trial_timeout
            return Permit(True, self.state, trial=self._next_token), changes
        wait = max(0.0, self.open_until - now) if self.state is BreakerState.OPEN else 0.0
        return Permit(False, self.state, retry_after=wait), changes

    def record(self, now: float, calls: int, failures: int, slow: int) -> list[Change]:
        """Outcomes of calls made while the caller saw the breaker closed (batched; trials go to ``trial_done``)."""
        self.calls += calls
        self.failures += failures
        self.slow += slow
        changes = self.tick(now)
        if self.state is not BreakerState.CLOSED:
            return changes  # reports from callers that had not heard of the change yet: history, not evidence
        self.window.add(now, calls, failures, slow)
        total, failed, slowed = self.window.totals(now)
        s = self.settings
        if total >= s.minimum_calls and total > 0:
            if failed / total >= s.failure_rate:
                return [*changes, self._open(now, f"{failed:g} of {total:g} calls failed in {s.window:g}s")]
            if slowed / total >= s.slow_call_rate:
                return [*changes, self._open(now, f"{slowed:g} of {total:g} calls were slower than "
                                                  f"{s.slow_call_duration:g}s in {s.window:g}s")]
        return changes

    def trial_done(self, now: float, token: int, ok: bool) -> list[Change]:
        if self.trials.pop(token, None) is None or self.state is not BreakerState.HALF_OPEN:
            return []  # expired (counted as failed already), or an operator changed the state meanwhile
        self.calls += 1
        if not ok:
            self.failures += 1
            return [self._open(now, "a trial call failed")]
        self.trial_successes += 1
        if self.trial_successes >= self.settings.trial_calls:
            return [self._to(now, BreakerState.CLOSED, f"{self.trial_successes} trial call(s) succeeded")]
        return []

    def tick(self, now: float) -> list[Change]:
        """Transitions that time alone makes: open -> half-open when due; a trial past its deadline failed."""
        if self.state is BreakerState.OPEN and now >= self.open_until:
            return [self._to(now, BreakerState.HALF_OPEN, f"open for {self.settings.open_for:g}s")]
        if self.state is BreakerState.HALF_OPEN and any(deadline <= now for deadline in self.trials.values()):
            return [self._open(now, f"a trial call was not reported within {self.settings.trial_timeout:g}s")]
        return []

    def next_deadline(self) -> float | None:
        """When ``tick`` will next have something to do (the shell sets a timer for it)."""
        if self.state is BreakerState.OPEN:
            return self.open_until
        if self.state is BreakerState.HALF_OPEN and self.trials:
            return min(self.trials.values())
        return None

    # ---- what operators do ----

    def operate(self, now: float, op: str) -> list[Change]:
        """``open`` (trip now: half-open after open_for), ``isolate`` (held open until close or reset), ``close``
        (closed now, the window emptied), ``reset`` (closed, and every count since the start forgotten too)."""
        if op == "open":
            return [self._open(now, "opened by an operator")]
        if op == "isolate":
            return [self._to(now, BreakerState.ISOLATED, "isolated by an operator")]
        if op == "close":
            return [self._to(now, BreakerState.CLOSED, "closed by an operator")]
        if op == "reset":
            self.calls = self.failures = self.slow = self.opened = 0
            return [self._to(now, BreakerState.CLOSED, "reset by an operator")]
        raise ValueError(f"unknown breaker operation {op!r} (open, close, isolate, reset)")

    # ---- transitions ----

    def _open(self, now: float, reason: str) -> Change:
        self.opened += 1
        self.open_until = now + self.settings.open_for
        return self._to(now, BreakerState.OPEN, reason)

    def _to(self, now: float, new: BreakerState, reason: str) -> Change:
        old, self.state, self.changed_at = self.state, new, now
        self.trials.clear()
        self.trial_successes = 0
        self.window.clear()
        return Change(self.name, old, new, reason)

    def restore(self, now: float, state: BreakerState, remaining: float) -> None:
        """As it was before the daemon restarted: open for ``remaining`` more seconds, isolated, half-open."""
        self.state, self.changed_at = state, now
        self.open_until = now + max(0.0, remaining)

    def describe(self, now: float) -> dict[str, object]:
        total, failed, slowed = self.window.totals(now)
        s = self.settings
        return {
            "name": self.name, "state": str(self.state),
            "open_for_s": round(max(0.0, self.open_until - now), 3) if self.state is BreakerState.OPEN else None,
            "since_s": round(now - self.changed_at, 3),
            "window": {"calls": int(total), "failures": int(failed), "slow": int(slowed),
                       "failure_rate": round(failed / total, 4) if total else None, "seconds": s.window},
            "trials_out": len(self.trials),
            "totals": {"calls": self.calls, "failures": self.failures, "slow": self.slow, "opened": self.opened},
            "settings": {"failure_rate": s.failure_rate, "slow_call_rate": s.slow_call_rate,
                         "slow_call_duration": s.slow_call_duration, "minimum_calls": s.minimum_calls,
                         "window": s.window, "open_for": s.open_for, "trial_calls": s.trial_calls},
        }
