"""Restart intensity as a pure function of timestamps (OTP supervisor.erl, add_restart/3).

A supervisor keeps the monotonic times of its recent restarts. Each new restart drops the ones older
than ``period`` and adds ``now``; more than ``intensity`` left means the supervisor gives up.
Every restart counts, however long the child ran before it crashed.
"""

from __future__ import annotations


def add_restart(history: tuple[float, ...], now: float, period: float) -> tuple[float, ...]:
    """The restart history after one more restart at ``now``."""
    horizon = now - period
    return (*(t for t in history if t > horizon), now)


def exceeded(history: tuple[float, ...], intensity: int) -> bool:
    return len(history) > intensity
