"""Health gates of a migration stage (DESIGN 3.8), as pure functions of plain data and an injected clock.

    every ``interval`` s: Sample(t, cumulative counters) ──> Samples (a ring) ──> figures(window) ──> judge ──> Verdict
    broker: (t, handling latency) of each finished message ─┘                       baseline p50 ─┘

Figures over the window (never reaching back before the stage began):
  ``error_rate``        failed / finished messages (a handler raised, or its state was invalid)
  ``restarts_per_min``  child restarts in the last 60 s (the event stream's ``child_restarted``)
  ``delivery_success``  accepted / (accepted + refused) sends (mailbox full, no such agent, a failed commit)
  ``state_recovery``    agent starts that loaded their state and came up / agent start attempts (a start that
                        failed: the state could not be loaded or migrated, init or mount raised); judged from one
                        attempt on, and with none in the window there was nothing to recover (not a missing datum)
  ``p50_latency``       median seconds from delivery to ``done`` of the messages finished in the window (fails
                        above 2x the baseline only when also more than 10 ms above it: on a shared machine a
                        median of 1-5 ms doubles by itself, as right after a restart a batch of queued messages)
A rule with too few data (fewer than ``min_messages`` finished, ``min_sends`` sends, or no baseline) is not judged:
it is listed in ``unjudged``. The verdict is ``failed`` when any judged rule fails (the rollback trigger),
``inconclusive`` when none failed but some could not be judged, ``ok`` otherwise (Argo Rollouts' three outcomes).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from statistics import median
from typing import Any


@dataclass(frozen=True)
class Sample:
    """Cumulative counters at monotonic time ``t``."""

    t: float
    done: int = 0
    failed: int = 0
    accepted: int = 0
    rejected: int = 0
    restarts: int = 0
    starts: int = 0  # agents started (state loaded, ready)
    start_failures: int = 0  # agents that failed to start


@dataclass(frozen=True)
class Thresholds:
    error_rate: float = 0.05  # fail above
    restarts_per_min: float = 10.0  # fail above
    delivery_success: float = 0.95  # fail below
    state_recovery: float = 0.99  # fail below
    latency_factor: float = 2.0  # fail when p50 > factor x baseline p50...
    latency_floor: float = 0.010  # ...and more than this many seconds above it: a few ms either way is noise
    min_messages: int = 20
    min_sends: int = 20


@dataclass(frozen=True)
class Verdict:
    outcome: str  # ok | failed | inconclusive
    failed: tuple[str, ...] = ()
    unjudged: tuple[str, ...] = ()
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "failed": list(self.failed), "unjudged": list(self.unjudged),
                "figures": self.figures}


class Samples:
    """The last ``keep`` seconds of samples and latencies."""

    def __init__(self, keep: float) -> None:
        self.keep = keep
        self.samples: deque[Sample] = deque()
        self.latencies: deque[tuple[float, float]] = deque()

    def add(self, sample: Sample, latencies: Iterable[tuple[float, float]] = ()) -> None:
        self.samples.append(sample)
        self.latencies.extend(latencies)
        horizon = sample.t - self.keep
        while len(self.samples) > 2 and self.samples[1].t <= horizon:  # keep one at or before the horizon
            self.samples.popleft()
        while self.latencies and self.latencies[0][0] < horizon:
            self.latencies.popleft()

    def clear(self) -> None:
        self.samples.clear()
        self.latencies.clear()


def _base(samples: deque[Sample], start: float) -> Sample | None:
    """The last sample at or before ``start``, else the first after it."""
    chosen = None
    for sample in samples:
        if sample.t <= start or chosen is None:
            chosen = sample
        if sample.t > start:
            break
    return chosen


def figures(data: Samples, now: float, window: float, since: float) -> dict[str, Any]:
    """The window's figures: from ``max(now - window, since)`` to the last sample."""
    start = max(now - window, since)
    if not data.samples:
        return {"span_s": 0.0, "messages": 0, "sends": 0, "error_rate": None, "restarts_per_min": None,
                "delivery_success": None, "agent_starts": 0, "state_recovery": None, "p50_latency": None}
    last = data.samples[-1]
    base = _base(data.samples, start) or last
    minute = _base(data.samples, max(now - 60.0, since)) or last
    messages, sends = last.done - base.done, (last.accepted - base.accepted) + (last.rejected - base.rejected)
    lat = [dt for t, dt in data.latencies if t >= start]
    ok, failed = last.starts - base.starts, last.start_failures - base.start_failures
    return {
        "span_s": round(last.t - base.t, 3), "messages": messages, "sends": sends,
        "error_rate": (last.failed - base.failed) / messages if messages else None,
        "restarts_per_min": float(last.restarts - minute.restarts),
        "delivery_success": (last.accepted - base.accepted) / sends if sends else None,
        "agent_starts": ok + failed, "state_recovery": ok / (ok + failed) if ok + failed else None,
        "p50_latency": median(lat) if lat else None, "latencies": len(lat),
    }


def judge(fig: dict[str, Any], baseline_p50: float | None, limits: Thresholds | None = None) -> Verdict:
    limits = limits or Thresholds()
    failed: list[str] = []
    unjudged: list[str] = []
    if fig.get("messages", 0) >= limits.min_messages and fig.get("error_rate") is not None:
        if fig["error_rate"] > limits.error_rate:
            failed.append(f"error rate {fig['error_rate']:.1%} > {limits.error_rate:.0%}")
    else:
        unjudged.append(f"error rate (fewer than {limits.min_messages} messages)")
    if fig.get("restarts_per_min") is not None:
        if fig["restarts_per_min"] > limits.restarts_per_min:
            failed.append(f"{fig['restarts_per_min']:g} restarts in the last minute > {limits.restarts_per_min:g}")
    else:
        unjudged.append("restarts (no sample yet)")
    if fig.get("sends", 0) >= limits.min_sends and fig.get("delivery_success") is not None:
        if fig["delivery_success"] < limits.delivery_success:
            failed.append(f"delivery success {fig['delivery_success']:.1%} < {limits.delivery_success:.0%}")
    else:
        unjudged.append(f"delivery success (fewer than {limits.min_sends} sends)")
    if fig.get("state_recovery") is not None and fig["state_recovery"] < limits.state_recovery:
        failed.append(f"state recovery {fig['state_recovery']:.1%} < {limits.state_recovery:.0%} "
                      f"({fig['agent_starts']} agent starts)")
    p50 = fig.get("p50_latency")
    if p50 is not None and baseline_p50 and fig.get("latencies", 0) >= limits.min_messages:
        if p50 > limits.latency_factor * baseline_p50 and p50 - baseline_p50 > limits.latency_floor:
            failed.append(f"p50 latency {p50 * 1000:.1f} ms > {limits.latency_factor:g}x the baseline "
                          f"{baseline_p50 * 1000:.1f} ms")
    else:
        unjudged.append("p50 latency (no baseline or too few messages)")
    outcome = "failed" if failed else "inconclusive" if unjudged else "ok"
    return Verdict(outcome, tuple(failed), tuple(unjudged), {k: v for k, v in fig.items() if k != "latencies"})


def baseline(data: Samples, now: float, window: float, since: float, min_messages: int) -> dict[str, Any]:
    """What a stage is compared with, taken just before it starts: the p50 latency of the window before."""
    fig = figures(data, now, window, since)
    enough = fig.get("latencies", 0) >= min_messages
    return {"p50_latency": fig["p50_latency"] if enough else None, "taken": now}
