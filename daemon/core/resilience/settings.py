"""The ``[resilience]`` table of the config, validated into frozen settings (daemon/config.py calls ``parse``).

    [resilience.breaker]              # defaults of every breaker (breakers are made at first use, by name)
    failure_rate = 0.5
    [resilience.breakers.payments]    # one dependency's own settings, over the defaults
    open_for = 30.0
    [resilience.limits.api]           # a token bucket: rate a second, burst at most
    rate = 10.0
    burst = 20
    lease = 5                         # optional: a grant adds up to 5 tokens the agent spends without asking,
    lease_for = 0.1                   # within 0.1 s (limiter.py)
    [resilience.retry_budget]         # every dependency's retry budget
    ratio = 0.2
    [resilience.alerts]               # the error tracker
    window = 60.0
    thresholds = { timeout = 15 }     # code or category -> errors in the window that raise an ``alert`` event

Errors are ``SettingError(key, message)`` with the dotted key from ``resilience`` on, one line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

from daemon.core.resilience.breaker import BreakerSettings
from daemon.core.resilience.limiter import BudgetSettings, LimitSettings

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}")
_TOP = ("alerts", "breaker", "breakers", "limits", "retry_budget")


class SettingError(ValueError):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message


@dataclass(frozen=True)
class ResilienceConfig:
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    breakers: dict[str, BreakerSettings] = field(default_factory=dict, hash=False)  # (compared, not hashed: a
    limits: dict[str, LimitSettings] = field(default_factory=dict, hash=False)  # DaemonConfig stays hashable)
    retry_budget: BudgetSettings = field(default_factory=BudgetSettings)
    alert_window: float = 60.0
    alerts: dict[str, int] = field(default_factory=dict, hash=False)

    def breaker_for(self, name: str) -> BreakerSettings:
        return self.breakers.get(name, self.breaker)


def parse(value: object) -> ResilienceConfig:
    table = _table(value, "resilience", _TOP)
    default = _breaker(table.get("breaker", {}), "resilience.breaker", BreakerSettings())
    breakers = {name: _breaker(body, f"resilience.breakers.{name}", default)
                for name, body in _named(table.get("breakers", {}), "resilience.breakers").items()}
    limits = {name: _limit(body, f"resilience.limits.{name}")
              for name, body in _named(table.get("limits", {}), "resilience.limits").items()}
    budget = _budget(table.get("retry_budget", {}), "resilience.retry_budget")
    alerts = _table(table.get("alerts", {}), "resilience.alerts", ("thresholds", "window"))
    window = _number(alerts.get("window", 60.0), "resilience.alerts.window", low=0.0, open_low=True)
    thresholds = _table(alerts.get("thresholds", {}), "resilience.alerts.thresholds", None)
    counts = {str(k): _integer(v, f"resilience.alerts.thresholds.{k}", low=1) for k, v in thresholds.items()}
    return ResilienceConfig(default, breakers, limits, budget, window, counts)


def _table(value: object, key: str, known: tuple[str, ...] | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SettingError(key, f"expected a table, got {type(value).__name__}")
    if known is not None:
        for name in value:
            if name not in known:
                raise SettingError(f"{key}.{name}", f"unknown key (known: {', '.join(known)})")
    return value


def _named(value: object, key: str) -> dict[str, Any]:
    table = _table(value, key, None)
    for name in table:
        if not NAME_RE.fullmatch(name):
            raise SettingError(f"{key}.{name}", "a name of letters, digits and _ . : / - (up to 128)")
    return table


def _number(value: object, key: str, low: float, high: float = math.inf, open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SettingError(key, f"expected a number, got {value!r}")
    if value < low or (open_low and value == low) or value > high:
        bound = f"more than {low:g}" if open_low else f"at least {low:g}"
        raise SettingError(key, f"{value!r} is out of range ({bound}" + (f", at most {high:g})" if high < math.inf
                                                                          else ")"))
    return float(value)


def _integer(value: object, key: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SettingError(key, f"expected an integer >= {low}, got {value!r}")
    return value


def _breaker(value: object, key: str, base: BreakerSettings) -> BreakerSettings:
    known = tuple(f.name for f in fields(BreakerSettings))
    table = _table(value, key, known)
    out: dict[str, Any] = {}
    for name, raw in table.items():
        where = f"{key}.{name}"
        if name in ("minimum_calls", "trial_calls", "buckets"):
            out[name] = _integer(raw, where, low=1)
        elif name in ("failure_rate", "slow_call_rate"):
            out[name] = _number(raw, where, low=0.0, high=1.0, open_low=True)
        else:
            out[name] = _number(raw, where, low=0.0, open_low=True)
    return replace(base, **out)


def _limit(value: object, key: str) -> LimitSettings:
    table = _table(value, key, ("burst", "lease", "lease_for", "rate"))
    if "rate" not in table:
        raise SettingError(f"{key}.rate", "missing: tokens a second, e.g. rate = 10.0")
    rate = _number(table["rate"], f"{key}.rate", low=0.0, open_low=True)
    burst = _number(table.get("burst", max(1.0, rate)), f"{key}.burst", low=1.0)
    lease = _integer(table.get("lease", 0), f"{key}.lease", low=0)
    lease_for = _number(table.get("lease_for", 0.1), f"{key}.lease_for", low=0.0, open_low=True)
    return LimitSettings(rate, burst, lease, lease_for)


def _budget(value: object, key: str) -> BudgetSettings:
    table = _table(value, key, ("minimum_per_second", "ratio", "window"))
    out: dict[str, Any] = {}
    if "ratio" in table:
        out["ratio"] = _number(table["ratio"], f"{key}.ratio", low=0.0)
    if "minimum_per_second" in table:
        out["minimum_per_second"] = _number(table["minimum_per_second"], f"{key}.minimum_per_second", low=0.0)
    if "window" in table:
        out["window"] = _number(table["window"], f"{key}.window", low=0.0, open_low=True)
    return BudgetSettings(**out)
