"""Restart intensity as a pure function of plain float timestamps (OTP supervisor.erl add_restart/3)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.core.intensity import add_restart, exceeded


def fold(times: list[float], period: float) -> tuple[float, ...]:
    history: tuple[float, ...] = ()
    for now in times:
        history = add_restart(history, now, period)
    return history


def test_first_restart_starts_the_history():
    assert add_restart((), 10.0, 5.0) == (10.0,)


def test_recent_restarts_are_kept_in_order():
    assert add_restart((6.0, 8.0), 10.0, 5.0) == (6.0, 8.0, 10.0)


def test_restarts_older_than_period_are_dropped():
    assert add_restart((1.0, 4.9, 6.0), 10.0, 5.0) == (6.0, 10.0)


def test_a_restart_exactly_period_old_drops_out():
    assert add_restart((5.0,), 10.0, 5.0) == (10.0,)
    assert add_restart((0.0, 5.0), 5.0, 5.0) == (5.0, 5.0)


def test_a_restart_just_inside_period_is_kept():
    assert add_restart((5.25,), 10.0, 5.0) == (5.25, 10.0)


def test_add_restart_does_not_change_its_input():
    history = (6.0, 8.0)
    add_restart(history, 100.0, 5.0)
    assert history == (6.0, 8.0)
    assert add_restart(history, 100.0, 5.0) == (100.0,)


def test_restarts_at_the_same_instant_all_count():
    assert add_restart((3.0, 3.0), 3.0, 5.0) == (3.0, 3.0, 3.0)


def test_exceeded_is_strictly_more_than_intensity():
    assert not exceeded((), 0)
    assert exceeded((1.0,), 0)
    assert not exceeded((1.0, 2.0, 3.0), 3)
    assert exceeded((1.0, 2.0, 3.0, 4.0), 3)


def test_otp_table_three_in_five_seconds():
    """intensity=3, period=5: a 4th restart within the window exceeds; spaced out, never."""
    assert not exceeded(fold([0.0, 1.0, 2.0], 5.0), 3)
    assert exceeded(fold([0.0, 1.0, 2.0, 3.0], 5.0), 3)
    assert exceeded(fold([0.0, 1.0, 2.0, 4.75], 5.0), 3)
    assert not exceeded(fold([0.0, 1.0, 2.0, 5.0], 5.0), 3)  # the first is exactly 5 s old: gone
    history: tuple[float, ...] = ()
    for i in range(100):
        history = add_restart(history, i * 5.5, 5.0)
        assert history == (i * 5.5,)
        assert not exceeded(history, 1)


def test_intensity_zero_is_exceeded_by_the_first_restart():
    assert exceeded(add_restart((), 42.0, 5.0), 0)


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=1, max_size=30),
    period=st.floats(0.1, 20.0, allow_nan=False),
)
def test_history_is_the_window_ending_now(gaps, period):
    times, now = [], 0.0
    for gap in gaps:
        now += gap
        times.append(now)
    history = fold(times, period)
    assert history[-1] == now
    assert list(history) == sorted(history)
    assert all(now - period < t <= now for t in history)
    # nothing inside the window was lost: the history is exactly the suffix of restarts within it
    assert list(history) == times[len(times) - len(history) :]
    if len(history) < len(times):
        assert times[len(times) - len(history) - 1] <= now - period
