"""Restart delays: exponential, jittered, capped; a pure function of the attempt number and an rng."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.core.backoff import delay
from daemon.core.spec import Backoff


def test_without_jitter_the_delay_doubles_from_initial():
    policy = Backoff(initial=0.1, factor=2.0, max=30.0, jitter=0.0)
    got = [delay(policy, n, random.Random(0)) for n in range(5)]
    assert got == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])


def test_without_jitter_the_delay_caps_at_max():
    policy = Backoff(initial=1.0, factor=3.0, max=10.0, jitter=0.0)
    assert [delay(policy, n, random.Random(0)) for n in range(5)] == [1.0, 3.0, 9.0, 10.0, 10.0]


def test_factor_one_keeps_the_delay_constant():
    policy = Backoff(initial=2.0, factor=1.0, max=10.0, jitter=0.0)
    assert {delay(policy, n, random.Random(0)) for n in range(20)} == {2.0}


def test_zero_initial_means_no_delay():
    policy = Backoff(initial=0.0, factor=2.0, max=10.0, jitter=0.5)
    assert [delay(policy, n, random.Random(1)) for n in range(5)] == [0.0] * 5


def test_a_seeded_rng_gives_the_same_sequence():
    policy = Backoff()
    first = [delay(policy, n, random.Random(7)) for n in range(10)]
    rng_a, rng_b = random.Random(7), random.Random(7)
    assert [delay(policy, n, rng_a) for n in range(10)] == [delay(policy, n, rng_b) for n in range(10)]
    assert first != [delay(policy, n, random.Random(8)) for n in range(10)]


def test_jitter_stays_within_its_fraction():
    policy = Backoff(initial=1.0, factor=2.0, max=100.0, jitter=0.25)
    rng = random.Random(3)
    samples = [delay(policy, 2, rng) for _ in range(500)]
    assert all(3.0 <= s <= 5.0 for s in samples)
    assert min(samples) < 3.2
    assert max(samples) > 4.8  # the jitter really spreads both ways


def test_jitter_never_pushes_past_max():
    policy = Backoff(initial=1.0, factor=2.0, max=8.0, jitter=0.5)
    rng = random.Random(5)
    samples = [delay(policy, n, rng) for n in range(3, 300)]
    assert all(4.0 <= s <= 8.0 for s in samples)
    assert max(samples) == 8.0  # draws above the cap are clamped to it


@pytest.mark.parametrize("attempt", [1023, 1024, 1100, 10**6])
def test_a_long_crash_loop_stays_at_max_without_overflow(attempt):
    policy = Backoff(initial=0.1, factor=2.0, max=30.0, jitter=0.1)
    got = delay(policy, attempt, random.Random(0))
    assert 27.0 <= got <= 30.0


policies = st.builds(
    Backoff,
    initial=st.floats(0.0, 5.0),
    factor=st.floats(1.0, 4.0),
    max=st.floats(0.0, 60.0),
    jitter=st.floats(0.0, 1.0),
)


@settings(max_examples=200, deadline=None)
@given(policy=policies, attempt=st.integers(0, 2000), seed=st.integers(0, 2**32))
def test_delay_is_within_jittered_bounds_of_the_capped_base(policy, attempt, seed):
    got = delay(policy, attempt, random.Random(seed))
    try:
        base = min(policy.max, policy.initial * policy.factor**attempt)
    except OverflowError:
        base = policy.max
    assert 0.0 <= got <= policy.max
    assert base * (1 - policy.jitter) - 1e-9 <= got <= base * (1 + policy.jitter) + 1e-9
