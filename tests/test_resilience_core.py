"""The pure cores of the resilience services (daemon/core/resilience) and the one error shape (ipc/errors.py), with
plain floats for time: no daemon, no process."""

from __future__ import annotations

import errno

import lmdb
import pytest
import zmq

from agents.workflow.errors import CODE_CATEGORIES, InfrastructureError
from agents.workflow.errors import classify as step_classify
from daemon.config import ConfigError, parse_config
from daemon.core.resilience.breaker import Breaker, BreakerSettings, BreakerState
from daemon.core.resilience.limiter import BudgetSettings, LimitSettings, RetryBudget, TokenBucket
from daemon.core.resilience.tracker import ErrorTracker
from daemon.core.resilience.window import Window
from ipc.errors import ErrorCode, FoundationError, classify, error_context, from_exception

pytestmark = pytest.mark.timeout(10)

FAST = BreakerSettings(minimum_calls=4, failure_rate=0.5, window=10.0, open_for=5.0, trial_calls=1,
                       trial_timeout=2.0, slow_call_rate=0.5, slow_call_duration=1.0)


# ---- the error shape ----


def test_an_error_has_the_one_shape_with_defaults_from_its_code() -> None:
    body = FoundationError(ErrorCode.AGENT_DOWN, "gone").to_wire()
    assert body == {"code": "agent_down", "message": "gone", "category": "unavailable", "context": {},
                    "retryable": True}
    assert FoundationError(ErrorCode.HANDLER_ERROR, "x").retryable is False
    assert FoundationError(ErrorCode.RETRY_BUDGET_EXHAUSTED, "x").category == "unavailable"
    assert FoundationError(ErrorCode.RETRY_BUDGET_EXHAUSTED, "x").retryable is False


def test_an_old_peers_code_and_message_are_understood_and_an_unknown_code_is_kept() -> None:
    old = FoundationError.from_wire({"code": "timeout", "message": "slow"})
    assert (old.code, old.category, old.retryable, old.context) == (ErrorCode.TIMEOUT, "timeout", True, {})
    new = FoundationError.from_wire({"code": "card_declined", "message": "no", "category": "business",
                                     "retryable": False, "context": {"order": 7}})
    assert (new.code, new.category, new.retryable) == (ErrorCode.INTERNAL, "business", False)
    assert new.context == {"order": 7, "remote_code": "card_declined"}
    assert new.wire_code == "card_declined"


def test_the_cause_chain_and_a_remote_traceback_cross_the_wire() -> None:
    err = FoundationError(ErrorCode.HANDLER_ERROR, "failed")
    err.traceback = "Traceback ...\nKeyError: 'k'"
    err.__cause__ = ConnectionRefusedError(errno.ECONNREFUSED, "refused")
    back = FoundationError.from_wire(err.to_wire())
    assert back.traceback == err.traceback
    assert isinstance(back.__cause__, FoundationError)
    assert (back.__cause__.code, back.__cause__.category) == (ErrorCode.OS_ERROR, "infrastructure")


def test_error_context_is_carried_by_errors_made_inside_it() -> None:
    with error_context(agent="a", message="a/1"), error_context(order=7):
        err = FoundationError(ErrorCode.TIMEOUT, "slow", context={"step": "pay"})
    assert err.context == {"agent": "a", "message": "a/1", "order": 7, "step": "pay"}
    assert FoundationError(ErrorCode.TIMEOUT, "x").context == {}


def test_library_errors_are_mapped_at_the_boundary() -> None:
    assert from_exception(zmq.Again()).code is ErrorCode.TIMEOUT
    transport = from_exception(zmq.ZMQError(errno.EHOSTUNREACH), "sending cast")
    assert (transport.code, transport.category) == (ErrorCode.TRANSPORT, "unavailable")
    assert transport.message.startswith("sending cast: ")
    storage = from_exception(lmdb.MapFullError("full"))
    assert (storage.code, storage.category, storage.retryable) == (ErrorCode.STORAGE, "infrastructure", False)
    timeout = from_exception(OSError(errno.ETIMEDOUT, "timed out"))  # (Python makes it a TimeoutError)
    assert (timeout.code, timeout.category) == (ErrorCode.TIMEOUT, "timeout")
    refused = from_exception(ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "connect")
    assert (refused.code, refused.category, refused.context["errno"]) == (ErrorCode.OS_ERROR, "infrastructure",
                                                                           "ECONNREFUSED")
    assert from_exception(KeyError("k")).category == "internal"


def test_classify_is_shared_with_workflows() -> None:
    assert CODE_CATEGORIES["agent_down"] == "unavailable"
    assert step_classify(InfrastructureError("down", code="down"))["category"] == "infrastructure"
    assert step_classify(KeyError("k"))["category"] == "business"
    assert classify(KeyError("k"), unknown="internal")["category"] == "internal"
    assert classify(FileNotFoundError(2, "no"))["code"] == "FileNotFoundError"


# ---- the window ----


def test_a_window_forgets_by_bucket() -> None:
    window = Window(10.0, 10, fields=2)
    window.add(0.5, 1, 1)
    window.add(5.0, 2, 0)
    assert window.totals(9.9) == [3, 1]
    assert window.totals(10.5) == [2, 0]  # the first bucket [0, 1) left the window
    assert window.totals(30.0) == [0, 0]


# ---- breakers ----


def test_failures_open_the_breaker_only_past_the_minimum_number_of_calls() -> None:
    breaker = Breaker("dep", FAST)
    assert breaker.record(0.0, 3, 3, 0) == []  # 3 of 3 failed, but 3 < minimum_calls
    (change,) = breaker.record(1.0, 1, 0, 0)  # 3 of 4: 75 % >= 50 %
    assert (change.old, change.new) == (BreakerState.CLOSED, BreakerState.OPEN)
    permit, _ = breaker.permit(2.0)
    assert (permit.allowed, permit.state, permit.retry_after) == (False, BreakerState.OPEN, 4.0)


def test_slow_calls_open_it_too_and_old_calls_leave_the_window() -> None:
    breaker = Breaker("dep", FAST)
    assert breaker.record(0.0, 2, 0, 2) == []
    assert breaker.record(11.0, 2, 0, 0) == []  # the slow ones are out of the window by now
    (change,) = breaker.record(12.0, 2, 0, 2)
    assert change.new is BreakerState.OPEN
    assert "slower than 1s" in change.reason


def test_half_open_lets_one_trial_through_and_its_success_closes() -> None:
    breaker = Breaker("dep", FAST)
    breaker.record(0.0, 4, 4, 0)
    permit, changes = breaker.permit(5.0)
    assert [c.new for c in changes] == [BreakerState.HALF_OPEN]
    assert permit.allowed
    assert permit.trial is not None
    second, _ = breaker.permit(5.1)  # single flight: the trial is out
    assert (second.allowed, second.state) == (False, BreakerState.HALF_OPEN)
    assert breaker.record(5.2, 10, 10, 0) == []  # late reports of callers that saw it closed are not evidence
    (closed,) = breaker.trial_done(5.3, permit.trial, ok=True)
    assert closed.new is BreakerState.CLOSED


def test_a_failed_or_lost_trial_opens_it_again() -> None:
    breaker = Breaker("dep", FAST)
    breaker.record(0.0, 4, 4, 0)
    permit, _ = breaker.permit(5.0)
    assert permit.trial is not None
    (reopened,) = breaker.trial_done(5.1, permit.trial, ok=False)
    assert (reopened.new, breaker.open_until) == (BreakerState.OPEN, 10.1)
    permit, _ = breaker.permit(10.1)
    assert permit.trial is not None
    assert breaker.next_deadline() == 12.1
    (lost,) = breaker.tick(12.1)
    assert lost.new is BreakerState.OPEN
    assert "not reported" in lost.reason
    assert breaker.trial_done(12.2, permit.trial, ok=True) == []  # too late


def test_operators_isolate_close_open_and_reset() -> None:
    breaker = Breaker("dep", FAST)
    breaker.operate(0.0, "isolate")
    assert not breaker.permit(100.0)[0].allowed  # isolated: no timeout lets anything through
    breaker.operate(100.0, "close")
    assert breaker.permit(100.0)[0].allowed
    breaker.operate(100.0, "open")
    assert (breaker.state, breaker.opened) == (BreakerState.OPEN, 1)
    breaker.operate(100.0, "reset")
    assert (breaker.state, breaker.opened) == (BreakerState.CLOSED, 0)
    with pytest.raises(ValueError, match="unknown breaker operation"):
        breaker.operate(0.0, "explode")


def test_a_restored_breaker_stays_open_for_what_was_left() -> None:
    breaker = Breaker("dep", FAST)
    breaker.restore(50.0, BreakerState.OPEN, remaining=2.0)
    assert not breaker.permit(51.0)[0].allowed
    assert breaker.permit(52.0)[0].allowed


# ---- limits and budgets ----


def test_a_token_bucket_grants_its_burst_then_its_rate_and_says_when() -> None:
    bucket = TokenBucket("api", LimitSettings(rate=10.0, burst=3))
    assert [bucket.take(0.0)[0] for _ in range(4)] == [True, True, True, False]
    granted, retry_after = bucket.take(0.0)
    assert not granted
    assert retry_after == pytest.approx(0.1)
    assert bucket.take(0.1)[0]
    assert bucket.take(0.1, count=5) == (False, -1.0)  # more than the burst: never


def test_a_leased_grant_takes_spare_whole_tokens_the_bucket_has() -> None:
    bucket = TokenBucket("api", LimitSettings(rate=10.0, burst=6, lease=4, lease_for=0.1))
    assert bucket.take_lease(0.0) == (5.0, 0.0)  # one asked, four leased
    assert bucket.take_lease(0.0) == (1.0, 0.0)  # the last token: nothing spare
    count, retry_after = bucket.take_lease(0.0)
    assert count == 0.0
    assert retry_after == pytest.approx(0.1)
    assert bucket.take_lease(0.25) == (2.0, 0.0)  # 2.5 tokens came back: one asked, one whole spare
    assert bucket.describe(0.25)["leased"] == 5


def test_retries_add_at_most_their_share_of_calls() -> None:
    budget = RetryBudget(BudgetSettings(ratio=0.2, minimum_per_second=0.0, window=10.0))
    budget.deposit(0.0, 10)
    assert [budget.withdraw(1.0) for _ in range(3)] == [True, True, False]
    budget.deposit(2.0, 5)
    assert budget.withdraw(2.0)
    assert not budget.withdraw(2.0)
    assert budget.withdraw(15.0) is False  # the calls left the window: no share, and no minimum


# ---- the tracker ----


def test_the_tracker_alerts_once_when_a_threshold_is_crossed() -> None:
    tracker = ErrorTracker(window=60.0, thresholds={"timeout": 15})
    alerts = [a for i in range(20) for a in tracker.report(float(i), "timeout", "timeout", f"a{i % 2}")]
    assert [(a.key, a.count) for a in alerts] == [("timeout", 15)]
    assert tracker.check(200.0) == []  # below again: re-armed
    assert [a.key for a in tracker.report(201.0, "timeout", "timeout", "a", count=15)] == ["timeout"]
    rows = tracker.groups(201.0)
    assert (rows[0]["agent"], rows[0]["in_window"]) == ("a", 15)


# ---- config ----


def test_the_resilience_table_is_validated_naming_the_key() -> None:
    config = parse_config("""
        [resilience.breaker]
        minimum_calls = 5
        [resilience.breakers.payments]
        open_for = 30.0
        [resilience.limits.api]
        rate = 10.0
        [resilience.alerts]
        thresholds = { timeout = 15 }
    """, "t.toml").resilience
    assert config.breaker_for("payments").open_for == 30.0
    assert config.breaker_for("payments").minimum_calls == 5
    assert config.breaker_for("other").open_for == 5.0
    assert config.limits["api"] == LimitSettings(10.0, 10.0)
    assert config.alerts == {"timeout": 15}
    for text, key in [("[resilience.breaker]\nfailure_rate = 2", "resilience.breaker.failure_rate"),
                      ("[resilience.limits.api]\nburst = 3", "resilience.limits.api.rate"),
                      ("[resilience]\nbreakrs = {}", "resilience.breakrs"),
                      ("[resilience.limits.api]\nrate = 1\nlease = -1", "resilience.limits.api.lease"),
                      ("[resilience.limits.api]\nrate = 1\nlease_for = 0", "resilience.limits.api.lease_for"),
                      ("[resilience.alerts.thresholds]\ntimeout = 0", "resilience.alerts.thresholds.timeout")]:
        with pytest.raises(ConfigError) as info:
            parse_config(text, "t.toml")
        assert info.value.key == key, text
        assert "\n" not in str(info.value)
