"""The pure supervision core against OTP's behaviour table: no processes, no sleeping.

A FakeShell answers Spawn with fresh fake pids and keeps timers on a fake clock; a Signal does not end a
process by itself, so every test says when a process exits. ``kinds`` reduces an action list to
'spawn a' / 'term a' / 'kill a' / 'halt N', which keeps the expected sequences readable.
"""

from __future__ import annotations

import random
import re
import signal

import pytest
from fakeshell import SIGKILL, SIGTERM, FakeShell, halts, kinds, spawns, timers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.core import backoff, events
from daemon.core.protocol import CancelTimer, Exited, Halt, Log, Signal, Spawn, Spawned, StartTimer, TimerFired
from daemon.core.spec import (
    BRUTAL_KILL,
    INFINITY,
    Backoff,
    RestartType,
    Strategy,
    SupervisorSpec,
    WorkerSpec,
)
from daemon.core.states import ALIVE, DOWN
from daemon.core.tree import Supervisor, Worker, should_restart
from ipc.errors import ErrorCode, FoundationError

PERMANENT, TRANSIENT, TEMPORARY = RestartType.PERMANENT, RestartType.TRANSIENT, RestartType.TEMPORARY
ONE_FOR_ONE, ONE_FOR_ALL, REST_FOR_ONE = Strategy.ONE_FOR_ONE, Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE


def W(name: str, **kw) -> WorkerSpec:
    return WorkerSpec(name, command=("/bin/true",), **kw)


def S(name: str, *children, **kw) -> SupervisorSpec:
    return SupervisorSpec(name, children=children, **kw)


def booted(*children, **kw) -> FakeShell:
    sh = FakeShell(S("root", *children, **kw))
    sh.boot()
    assert set(sh.live) == set(_worker_names(sh.tree.root)), "boot did not start every worker"
    return sh


def _worker_names(node) -> list[str]:
    if isinstance(node, Worker):
        return [node.name]
    return [n for c in node.children for n in _worker_names(c)]


def child_names(sh: FakeShell, sup: str = "root") -> list[str]:
    def find(d):
        if d["name"] == sup:
            return d
        for c in d.get("children", []):
            hit = find(c)
            if hit is not None:
                return hit
        return None

    return [c["name"] for c in find(sh.tree.snapshot())["children"]]


def restarts(sh: FakeShell, name: str) -> int:
    return sh.tree.find(name).restarts


def happened(sh: FakeShell, kind: type) -> list:
    """The core's typed events of one kind since the last look (daemon/core/events.py)."""
    return [e for e in sh.tree.take_events() if isinstance(e, kind)]


# ---- boot ----


def test_boot_starts_children_in_order_depth_first():
    sh = FakeShell(S("root", W("a"), S("n", W("x"), W("y")), W("b")))
    actions = sh.boot()
    assert kinds(actions) == ["spawn a", "spawn x", "spawn y", "spawn b"]
    assert [sh.state(n) for n in ("root", "a", "n", "x", "y", "b")] == ["running"] * 6
    assert sh.live["a"] < sh.live["x"] < sh.live["y"] < sh.live["b"]
    assert next(a.spec for a in actions if isinstance(a, Spawn)) == W("a")


def test_should_restart_decision_table():
    table = {
        (PERMANENT, True): True,
        (PERMANENT, False): True,
        (TRANSIENT, True): False,
        (TRANSIENT, False): True,
        (TEMPORARY, True): False,
        (TEMPORARY, False): False,
    }
    assert {key: should_restart(*key) for key in table} == table


# ---- strategies ----


def test_one_for_one_restarts_only_the_crashed_child():
    sh = booted(W("a"), W("b"), W("c"))
    old = dict(sh.live)
    assert kinds(sh.crash("b")) == ["spawn b"]
    assert sh.live["b"] not in old.values()
    assert (sh.live["a"], sh.live["c"]) == (old["a"], old["c"])
    assert (restarts(sh, "root"), restarts(sh, "b"), restarts(sh, "a")) == (1, 1, 0)


def test_one_for_all_stops_running_siblings_in_reverse_one_at_a_time_then_starts_all_in_order():
    sh = booted(W("a"), W("b"), W("c"), W("d"), strategy=ONE_FOR_ALL)
    old = dict(sh.live)
    crash = sh.crash("b")
    assert kinds(crash) == ["term d"]  # only the last one: each stop waits for the previous exit
    assert [t.delay for t in timers(crash)] == [5.0]  # its SIGKILL timer
    assert kinds(sh.exit_after_signal("d")) == ["term c"]
    assert kinds(sh.exit_after_signal("c")) == ["term a"]
    assert kinds(sh.exit_after_signal("a")) == ["spawn a", "spawn b", "spawn c", "spawn d"]
    assert all(sh.live[n] not in old.values() for n in "abcd")
    assert sh.timers == {}  # every SIGKILL timer was cancelled by the exit it waited for
    assert [restarts(sh, n) for n in ("root", "a", "b", "c", "d")] == [1, 1, 1, 1, 1]


def test_one_for_all_sigterm_signals_go_to_the_current_pids():
    sh = booted(W("a"), W("b"), strategy=ONE_FOR_ALL)
    pid_b = sh.live["b"]
    actions = sh.crash("a")
    assert [a for a in actions if isinstance(a, Signal)] == [Signal("b", pid_b, SIGTERM)]


def test_rest_for_one_restarts_the_crashed_child_and_those_after_it_not_before():
    sh = booted(W("a"), W("b"), W("c"), W("d"), strategy=REST_FOR_ONE)
    old = dict(sh.live)
    assert kinds(sh.crash("b")) == ["term d"]
    assert kinds(sh.exit_after_signal("d")) == ["term c"]
    assert kinds(sh.exit_after_signal("c")) == ["spawn b", "spawn c", "spawn d"]
    assert sh.live["a"] == old["a"]
    assert all(sh.live[n] not in old.values() for n in "bcd")


def test_rest_for_one_crash_of_the_last_child_restarts_only_it():
    sh = booted(W("a"), W("b"), W("c"), strategy=REST_FOR_ONE)
    old = dict(sh.live)
    assert kinds(sh.crash("c")) == ["spawn c"]
    assert (sh.live["a"], sh.live["b"]) == (old["a"], old["b"])


def test_one_for_all_stops_a_temporary_sibling_but_never_starts_it_again():
    sh = booted(W("a"), W("t", restart=TEMPORARY), W("b"), strategy=ONE_FOR_ALL)
    assert kinds(sh.crash("a")) == ["term b"]
    assert kinds(sh.exit_after_signal("b")) == ["term t"]
    assert kinds(sh.exit_after_signal("t")) == ["spawn a", "spawn b"]
    assert sh.spawn_count["t"] == 1
    assert sh.state("t") == "stopped"


def test_one_for_all_does_not_bring_back_a_transient_child_that_exited_normally():
    sh = booted(W("a"), W("t", restart=TRANSIENT), strategy=ONE_FOR_ALL)
    assert kinds(sh.exit("t")) == []
    assert kinds(sh.crash("a")) == ["spawn a"]  # nothing else was running
    assert "t" not in sh.live


# ---- restart types ----


def _end(sh: FakeShell, name: str, how: str):
    if how == "exit 0":
        return sh.exit(name)
    if how == "exit 1":
        return sh.crash(name, status=1)
    assert how == "signal"
    return sh.kill(name, signal.SIGSEGV)


def _assert_restarted(restart: RestartType, how: str) -> None:
    sh = booted(W("a", restart=restart), W("b"), intensity=1)
    old = sh.live["a"]
    assert kinds(_end(sh, "a", how)) == ["spawn a"]
    assert sh.live["a"] != old
    assert (sh.state("a"), restarts(sh, "a"), restarts(sh, "root")) == ("running", 1, 1)


def _assert_not_restarted(restart: RestartType, how: str, state: str) -> None:
    # intensity=0: had the exit been counted as a restart, the root would fail and stop b
    sh = booted(W("a", restart=restart), W("b"), intensity=0)
    actions = _end(sh, "a", how)
    assert kinds(actions) == []
    assert "a" not in sh.live
    assert (sh.state("a"), sh.state("root"), restarts(sh, "root")) == (state, "running", 0)
    assert sh.halt is None


def test_permanent_is_restarted_after_exit_0():
    _assert_restarted(PERMANENT, "exit 0")


def test_permanent_is_restarted_after_a_crash():
    _assert_restarted(PERMANENT, "exit 1")


def test_permanent_is_restarted_after_being_killed_by_a_signal():
    _assert_restarted(PERMANENT, "signal")


def test_transient_is_not_restarted_after_exit_0():
    _assert_not_restarted(TRANSIENT, "exit 0", "stopped")


def test_transient_is_restarted_after_status_1():
    _assert_restarted(TRANSIENT, "exit 1")


def test_transient_is_restarted_after_being_killed_by_a_signal():
    _assert_restarted(TRANSIENT, "signal")


@pytest.mark.parametrize(
    ("how", "state"), [("exit 0", "stopped"), ("exit 1", "failed"), ("signal", "failed")]
)
def test_temporary_is_never_restarted(how, state):
    _assert_not_restarted(TEMPORARY, how, state)


def test_exit_describes_status_and_signal_in_snapshot():
    sh = booted(W("a", restart=TEMPORARY), W("b", restart=TEMPORARY))
    sh.crash("a", status=3)
    sh.kill("b", signal.SIGKILL)
    kids = {c["name"]: c for c in sh.tree.snapshot()["children"]}
    assert kids["a"]["last_exit"] == "exited with status 3"
    assert kids["b"]["last_exit"] == "killed by SIGKILL"
    assert (kids["a"]["pid"], kids["a"]["state"], kids["b"]["state"]) == (None, "failed", "failed")


def test_snapshot_entries_follow_the_clock_and_every_change_though_kept_between_requests():
    sh = booted(W("a"), W("b"))
    first = {c["name"]: c for c in sh.tree.snapshot()["children"]}
    sh.now += 2.5
    sh.crash("a", status=3)
    sh.now += 1.0
    kids = {c["name"]: c for c in sh.tree.snapshot()["children"]}
    assert kids["a"]["pid"] != first["a"]["pid"]
    assert (kids["a"]["restarts"], kids["a"]["last_exit"], kids["a"]["last_exit_ago_s"]) == (
        1, "exited with status 3", 1.0)
    assert kids["a"]["uptime_s"] == 1.0
    assert (kids["b"]["pid"], kids["b"]["uptime_s"], "last_exit_ago_s" in kids["b"]) == (first["b"]["pid"], 3.5, False)
    kids["b"]["status"] = "added by a caller"  # (what notify children reported): not kept for the next request
    assert "status" not in {c["name"]: c for c in sh.tree.snapshot()["children"]}["b"]


# ---- intensity ----


def test_intensity_three_crashes_within_period_are_restarted():
    sh = booted(W("a"), W("b"), W("c"), intensity=3, period=5.0)
    for _ in range(3):
        assert kinds(sh.crash("a")) == ["spawn a"]
        sh.advance(1.0)
    assert (sh.state("root"), restarts(sh, "root"), sh.halt) == ("running", 3, None)


def test_intensity_fourth_crash_within_period_stops_children_in_reverse_and_fails_the_root():
    sh = booted(W("a"), W("b"), W("c"), intensity=3, period=5.0)
    for _ in range(3):
        assert kinds(sh.crash("a")) == ["spawn a"]
        sh.advance(1.0)
    sh.tree.take_events()
    fourth = sh.crash("a")  # 3 s after the first: 4 restarts in the window
    assert kinds(fourth) == ["term c"]
    assert [(e.supervisor, e.last) for e in happened(sh, events.IntensityExceeded)] == [("root", "a")]
    assert sh.state("root") == "stopping"
    assert kinds(sh.exit_after_signal("c")) == ["term b"]
    end = sh.exit_after_signal("b")
    assert kinds(end) == ["halt 1"]
    assert end[-1] == sh.halt
    assert sh.halt.code == 1
    assert (sh.state("root"), sh.live, sh.spawn_count["a"]) == ("failed", {}, 4)


def test_intensity_crashes_spaced_more_than_period_apart_never_exceed_it():
    sh = booted(W("a"), W("b"), intensity=1, period=5.0)
    for _ in range(12):
        assert kinds(sh.crash("a")) == ["spawn a"]
        sh.advance(5.5)
    assert (sh.halt, sh.state("root"), restarts(sh, "root")) == (None, "running", 12)


def test_intensity_a_restart_exactly_period_old_has_dropped_out():
    sh = booted(W("a"), W("b"), intensity=1, period=5.0)
    assert kinds(sh.crash("a")) == ["spawn a"]
    sh.advance(5.0)
    assert kinds(sh.crash("a")) == ["spawn a"]


def test_intensity_a_restart_just_inside_period_still_counts():
    sh = booted(W("a"), W("b"), intensity=1, period=5.0)
    assert kinds(sh.crash("a")) == ["spawn a"]
    sh.advance(4.5)
    assert kinds(sh.crash("a")) == ["term b"]


def test_intensity_zero_fails_on_the_first_crash():
    sh = booted(W("a"), W("b"), intensity=0)
    assert kinds(sh.crash("a")) == ["term b"]
    assert kinds(sh.exit_after_signal("b")) == ["halt 1"]
    assert sh.spawn_count == {"a": 1, "b": 1}


def test_intensity_counts_restarts_of_different_children_together():
    sh = booted(W("a"), W("b"), W("c"), intensity=2, period=5.0)
    assert kinds(sh.crash("a")) == ["spawn a"]
    assert kinds(sh.crash("b")) == ["spawn b"]
    assert kinds(sh.crash("c")) == ["term b"]  # 3rd restart in the window; c is down, a is next
    assert kinds(sh.exit_after_signal("b")) == ["term a"]


# ---- escalation ----


def test_nested_supervisor_exceeding_intensity_stops_its_children_then_parent_restarts_it():
    sh = booted(W("a"), S("n", W("x"), W("y"), W("z"), intensity=1, period=5.0), W("b"))
    old = dict(sh.live)
    assert kinds(sh.crash("x")) == ["spawn x"]
    sh.tree.take_events()
    failing = sh.crash("y")  # n's second restart in its window: n gives up
    assert kinds(failing) == ["term z"]
    assert [e.supervisor for e in happened(sh, events.SupervisorFailed)] == ["n"]
    assert kinds(sh.exit_after_signal("z")) == ["term x"]
    # n is down: that is a crash in root (one_for_one), which starts n again, children in order
    assert kinds(sh.exit_after_signal("x")) == ["spawn x", "spawn y", "spawn z"]
    assert (sh.live["a"], sh.live["b"]) == (old["a"], old["b"])
    assert all(sh.live[n] not in old.values() for n in "xyz")
    assert (sh.state("n"), restarts(sh, "root"), sh.halt) == ("running", 1, None)
    # the restarted n has a fresh restart history, as a new OTP supervisor process would
    assert kinds(sh.crash("x")) == ["spawn x"]


def test_nested_supervisor_failure_is_restarted_per_parent_one_for_all():
    sh = booted(W("a"), S("n", W("x"), intensity=0), W("b"), strategy=ONE_FOR_ALL)
    old = dict(sh.live)
    assert kinds(sh.crash("x")) == ["term b"]  # n failed at once (nothing else to stop); root stops b, a
    assert kinds(sh.exit_after_signal("b")) == ["term a"]
    assert kinds(sh.exit_after_signal("a")) == ["spawn a", "spawn x", "spawn b"]
    assert all(sh.live[n] not in old.values() for n in "axb")


def test_nested_supervisor_failing_repeatedly_fails_the_root():
    sh = booted(W("a"), S("n", W("x"), intensity=0), intensity=1, period=10.0)
    assert kinds(sh.crash("x")) == ["spawn x"]  # n fails, root restarts it (1 of 1)
    sh.advance(1.0)
    assert kinds(sh.crash("x")) == ["term a"]  # n fails again: root's 2nd restart in 10 s
    assert kinds(sh.exit_after_signal("a")) == ["halt 1"]
    assert (sh.state("root"), sh.state("n"), sh.live) == ("failed", "failed", {})


def test_transient_nested_supervisor_failure_is_abnormal_and_restarted():
    sh = booted(W("a"), S("n", W("x"), intensity=0, restart=TRANSIENT))
    assert kinds(sh.crash("x")) == ["spawn x"]
    assert sh.state("n") == "running"


def test_temporary_nested_supervisor_is_not_restarted_after_it_fails():
    sh = booted(W("a"), S("n", W("x"), W("y"), intensity=0, restart=TEMPORARY))
    assert kinds(sh.crash("x")) == ["term y"]
    assert kinds(sh.exit_after_signal("y")) == []
    assert (sh.state("n"), sh.state("root"), set(sh.live)) == ("failed", "running", {"a"})


# ---- shutdown ----


def test_shutdown_stops_everything_in_reverse_order_nested_too_and_halts_0():
    sh = booted(W("a"), S("n", W("x"), W("y")), W("b"))
    assert kinds(sh.shutdown()) == ["term b"]
    assert kinds(sh.exit_after_signal("b")) == ["term y"]
    assert kinds(sh.exit_after_signal("y")) == ["term x"]
    assert kinds(sh.exit_after_signal("x")) == ["term a"]
    end = sh.exit_after_signal("a")
    assert kinds(end) == ["halt 0"]
    assert sh.halt == Halt(0, "orderly shutdown")
    assert [sh.state(n) for n in ("root", "a", "n", "x", "y", "b")] == ["stopped"] * 6
    assert (sh.live, sh.timers) == ({}, {})


def test_shutdown_child_ignoring_sigterm_gets_sigkill_when_its_timer_fires():
    sh = booted(W("a", shutdown=2.0))
    pid = sh.live["a"]
    actions = sh.shutdown()
    assert [a for a in actions if isinstance(a, Signal | StartTimer)] == [
        Signal("a", pid, SIGTERM),
        StartTimer(timers(actions)[0].token, 2.0),
    ]
    assert sh.advance(1.5) == []
    assert [a for a in sh.advance(0.5) if isinstance(a, Signal)] == [Signal("a", pid, SIGKILL)]
    assert sh.signalled["a"] == [SIGTERM, SIGKILL]
    end = sh.exit_after_signal("a")
    assert kinds(end) == ["halt 0"]
    assert not any(isinstance(a, CancelTimer) for a in end)  # the fired timer is not cancelled again


def test_graceful_exit_cancels_the_kill_timer():
    sh = booted(W("a", shutdown=2.0))
    token = timers(sh.shutdown())[0].token
    end = sh.exit_after_signal("a")
    assert CancelTimer(token) in end
    assert kinds(end) == ["halt 0"]
    assert sh.advance(10.0) == []


def test_shutdown_brutal_kill_sends_sigkill_directly():
    sh = booted(W("a"), W("b", shutdown=BRUTAL_KILL))
    actions = sh.shutdown()
    assert kinds(actions) == ["kill b"]
    assert timers(actions) == []
    assert kinds(sh.exit_after_signal("b")) == ["term a"]


def test_shutdown_infinity_starts_no_kill_timer():
    sh = booted(W("a", shutdown=INFINITY))
    actions = sh.shutdown()
    assert kinds(actions) == ["term a"]
    assert (timers(actions), sh.timers) == ([], {})
    assert sh.advance(100_000.0) == []
    assert sh.state("a") == "stopping"
    assert kinds(sh.exit_after_signal("a")) == ["halt 0"]


def test_kill_timer_also_guards_stops_of_a_group_restart():
    sh = booted(W("a"), W("b", shutdown=1.0), strategy=ONE_FOR_ALL)
    assert kinds(sh.crash("a")) == ["term b"]
    assert kinds(sh.advance(1.0)) == ["kill b"]
    assert kinds(sh.exit_after_signal("b")) == ["spawn a", "spawn b"]


def test_shutdown_while_root_is_failing_keeps_the_failure():
    sh = booted(W("a"), W("b"), intensity=0)
    assert kinds(sh.crash("a")) == ["term b"]
    assert kinds(sh.shutdown()) == []
    assert kinds(sh.exit_after_signal("b")) == ["halt 1"]


def test_shutdown_twice_and_after_halt_does_nothing_more():
    sh = booted(W("a"))
    assert kinds(sh.shutdown()) == ["term a"]
    assert sh.shutdown() == []
    assert kinds(sh.exit_after_signal("a")) == ["halt 0"]
    assert sh.shutdown() == []


def test_crash_during_shutdown_is_not_restarted():
    sh = booted(W("a"), W("b"), W("c"))
    assert kinds(sh.shutdown()) == ["term c"]
    assert kinds(sh.crash("a")) == []  # a goes down by itself while root waits for c
    assert kinds(sh.exit_after_signal("c")) == ["term b"]
    assert kinds(sh.exit_after_signal("b")) == ["halt 0"]
    assert sh.spawn_count["a"] == 1


# ---- start failure ----


def test_spawn_failed_at_boot_fails_the_root_without_a_retry_loop():
    sh = FakeShell(S("root", W("a"), W("b"), W("c")))
    sh.fail_next_spawns["b"] = 1
    actions = sh.boot()
    assert kinds(actions) == ["spawn a", "spawn b", "term a"]
    assert [e.name for e in happened(sh, events.StartFailed)] == ["b"]
    assert kinds(sh.exit_after_signal("a")) == ["halt 1"]
    assert sh.spawn_count == {"a": 1, "b": 1}  # c never started, b never retried
    assert (sh.state("b"), sh.state("c"), sh.state("root")) == ("failed", "stopped", "failed")


def test_spawn_failed_at_boot_in_a_nested_supervisor_escalates_to_the_root():
    sh = FakeShell(S("root", W("a"), S("n", W("x"), W("y")), W("c")))
    sh.fail_next_spawns["y"] = 1
    assert kinds(sh.boot()) == ["spawn a", "spawn x", "spawn y", "term x"]
    assert kinds(sh.exit_after_signal("x")) == ["term a"]  # n failed to start: root fails too
    assert kinds(sh.exit_after_signal("a")) == ["halt 1"]
    assert sh.spawn_count == {"a": 1, "x": 1, "y": 1}


def test_spawn_failed_during_a_restart_counts_as_another_crash():
    sh = booted(W("a"), W("b"), intensity=2, period=5.0)
    sh.fail_next_spawns["a"] = 100
    # crash: restart 1 (spawn fails), restart 2 (spawn fails), restart 3 exceeds 2 -> root fails
    assert kinds(sh.crash("a")) == ["spawn a", "spawn a", "term b"]
    assert kinds(sh.exit_after_signal("b")) == ["halt 1"]
    assert sh.spawn_count["a"] == 3


def test_spawn_failed_once_during_a_restart_is_retried_within_intensity():
    sh = booted(W("a"), W("b"), intensity=3, period=5.0)
    sh.fail_next_spawns["a"] = 1
    assert kinds(sh.crash("a")) == ["spawn a", "spawn a"]
    assert (sh.state("a"), restarts(sh, "root")) == ("running", 2)
    assert "a" in sh.live


def test_nested_supervisor_failing_to_restart_counts_as_a_crash_in_the_parent():
    sh = booted(W("a"), S("n", W("x"), intensity=0), intensity=1, period=5.0)
    sh.fail_next_spawns["x"] = 1
    # x crashes: n fails; root restarts n (1), x fails to start so n fails again; root restarts n (2) > 1
    assert kinds(sh.crash("x")) == ["spawn x", "term a"]
    assert kinds(sh.exit_after_signal("a")) == ["halt 1"]


# ---- dynamic children and operator requests ----


def test_attach_adds_a_child_at_the_end_and_starts_it():
    sh = booted(W("a"), W("b"))
    assert kinds(sh.attach("root", W("c"))) == ["spawn c"]
    assert child_names(sh) == ["a", "b", "c"]
    assert sh.state("c") == "running"
    assert kinds(sh.shutdown()) == ["term c"]  # last in start order: first to stop


def test_attach_a_supervisor_to_a_nested_supervisor_starts_its_children():
    sh = booted(W("a"), S("n", W("x")))
    assert kinds(sh.attach("n", S("m", W("p"), W("q")))) == ["spawn p", "spawn q"]
    assert child_names(sh, "n") == ["x", "m"]
    assert child_names(sh, "m") == ["p", "q"]


def test_attached_child_takes_part_in_group_restarts():
    sh = booted(W("a"), W("b"), strategy=REST_FOR_ONE)
    sh.attach("root", W("c"))
    assert kinds(sh.crash("b")) == ["term c"]
    assert kinds(sh.exit_after_signal("c")) == ["spawn b", "spawn c"]


@pytest.mark.parametrize("spec", [W("a"), W("root"), S("m", W("z"), W("x"))], ids=["sibling", "root", "nested"])
def test_attach_with_a_duplicate_name_raises_already_exists(spec):
    sh = booted(W("a"), S("n", W("x")))
    before = sh.tree.snapshot()
    with pytest.raises(FoundationError) as info:
        sh.attach("n", spec)
    assert info.value.code is ErrorCode.ALREADY_EXISTS
    assert sh.tree.snapshot() == before
    assert sh.tree.find("n").children[-1].name == "x"


def test_attach_to_a_worker_raises_not_a_supervisor():
    sh = booted(W("a"))
    with pytest.raises(FoundationError) as info:
        sh.attach("a", W("c"))
    assert info.value.code is ErrorCode.NOT_A_SUPERVISOR
    with pytest.raises(FoundationError) as info:
        sh.tree.find("c")
    assert info.value.code is ErrorCode.NO_SUCH_CHILD


def test_attach_to_an_unknown_parent_raises_no_such_child():
    sh = booted(W("a"))
    with pytest.raises(FoundationError) as info:
        sh.attach("nope", W("c"))
    assert info.value.code is ErrorCode.NO_SUCH_CHILD


def test_detach_stops_the_child_and_removes_it_from_the_snapshot():
    sh = booted(W("a"), W("b"), W("c"))
    assert kinds(sh.request("detach", "b")) == ["term b"]
    assert child_names(sh) == ["a", "b", "c"]  # removed once it has stopped
    sh.exit_after_signal("b")
    assert child_names(sh) == ["a", "c"]
    with pytest.raises(FoundationError) as info:
        sh.tree.find("b")
    assert info.value.code is ErrorCode.NO_SUCH_CHILD
    assert kinds(sh.attach("root", W("b"))) == ["spawn b"]  # the name is free again
    assert child_names(sh) == ["a", "c", "b"]


def test_detach_a_nested_supervisor_stops_its_children_and_frees_their_names():
    sh = booted(W("a"), S("n", W("x"), W("y")))
    assert kinds(sh.request("detach", "n")) == ["term y"]
    assert kinds(sh.exit_after_signal("y")) == ["term x"]
    sh.exit_after_signal("x")
    assert child_names(sh) == ["a"]
    assert kinds(sh.attach("root", W("x"))) == ["spawn x"]


def test_operator_stop_keeps_a_child_stopped_across_a_one_for_all_restart_and_start_brings_it_back():
    sh = booted(W("a"), W("b"), W("c"), strategy=ONE_FOR_ALL)
    assert kinds(sh.request("stop", "b")) == ["term b"]
    assert kinds(sh.exit_after_signal("b")) == []  # an operator stop is not a crash
    assert (sh.state("b"), restarts(sh, "root")) == ("stopped", 0)
    assert kinds(sh.crash("a")) == ["term c"]
    assert kinds(sh.exit_after_signal("c")) == ["spawn a", "spawn c"]
    assert ("b" in sh.live, sh.state("b")) == (False, "stopped")
    assert kinds(sh.request("start", "b")) == ["spawn b"]
    assert sh.state("b") == "running"


def test_operator_restart_gives_a_new_pid_and_does_not_count_toward_intensity():
    sh = booted(W("a"), W("b"), intensity=0)
    old = sh.live["a"]
    assert kinds(sh.request("restart", "a")) == ["term a"]
    assert kinds(sh.exit_after_signal("a")) == ["spawn a"]
    assert sh.live["a"] != old
    assert (sh.state("root"), restarts(sh, "root"), sh.halt) == ("running", 0, None)


def test_request_on_an_unknown_name_raises_no_such_child():
    sh = booted(W("a"))
    for verb in ("start", "stop", "restart", "detach"):
        with pytest.raises(FoundationError) as info:
            sh.request(verb, "nope")
        assert info.value.code is ErrorCode.NO_SUCH_CHILD


def test_request_on_the_root_is_a_bad_request():
    sh = booted(W("a"))
    with pytest.raises(FoundationError) as info:
        sh.request("stop", "root")
    assert info.value.code is ErrorCode.BAD_REQUEST


def test_requests_during_shutdown_raise_shutting_down():
    sh = booted(W("a"), S("n", W("x")))
    sh.shutdown()
    calls = [lambda: sh.request("stop", "a"), lambda: sh.request("start", "x"), lambda: sh.attach("n", W("z"))]
    for call in calls:
        with pytest.raises(FoundationError) as info:
            call()
        assert info.value.code is ErrorCode.SHUTTING_DOWN
    sh.stop_signalled()
    assert sh.halt is not None
    assert sh.halt.code == 0
    with pytest.raises(FoundationError) as info:
        sh.request("start", "a")
    assert info.value.code is ErrorCode.SHUTTING_DOWN


def test_requests_while_the_root_is_failing_raise_shutting_down():
    sh = booted(W("a"), W("b"), intensity=0)
    assert kinds(sh.crash("a")) == ["term b"]  # root is failing, waiting for b
    for call in (lambda: sh.request("start", "a"), lambda: sh.attach("root", W("c"))):
        with pytest.raises(FoundationError) as info:
            call()
        assert info.value.code is ErrorCode.SHUTTING_DOWN
    assert kinds(sh.exit_after_signal("b")) == ["halt 1"]
    assert "a" not in sh.live


def test_attach_to_a_stopped_supervisor_starts_nothing_until_the_supervisor_starts():
    sh = booted(W("a"), S("n", W("x")))
    sh.request("stop", "n")
    sh.stop_signalled()
    assert sh.state("n") == "stopped"
    assert kinds(sh.attach("n", W("y"))) == []  # no process under a stopped supervisor
    assert kinds(sh.request("start", "x")) == []
    assert kinds(sh.request("start", "n")) == ["spawn x", "spawn y"]
    assert kinds(sh.shutdown()) == ["term y"]
    sh.stop_signalled()
    assert (sh.live, sh.halt.code) == ({}, 0)


def test_start_of_a_child_while_its_supervisor_is_failing_does_not_orphan_it():
    sh = booted(W("a"), S("n", W("x"), W("y"), intensity=0, restart=TEMPORARY))
    assert kinds(sh.crash("x")) == ["term y"]  # n is failing
    sh.request("start", "x")  # queued in n while it stops
    assert kinds(sh.exit_after_signal("y")) == []
    assert (sh.state("n"), set(sh.live)) == ("failed", {"a"})


# ---- stale events ----


def test_exited_for_an_old_pid_is_ignored():
    sh = booted(W("a"), W("b"))
    old = sh.live["a"]
    sh.crash("a")
    new = sh.live["a"]
    assert sh.send(Exited("a", old, status=1)) == []
    assert (sh.live["a"], sh.state("a"), restarts(sh, "root")) == (new, "running", 1)


def test_crash_report_for_a_child_restarted_meanwhile_by_a_group_restart_is_dropped():
    # intensity=1: a second restart decision would fail the root
    sh = booted(W("a"), W("b"), W("c"), strategy=ONE_FOR_ALL, intensity=1)
    assert kinds(sh.crash("a")) == ["term c"]
    assert kinds(sh.crash("b")) == []  # b dies by itself while root waits for c: queued
    assert kinds(sh.exit_after_signal("c")) == ["spawn a", "spawn b", "spawn c"]  # b's report is stale
    assert (sh.halt, restarts(sh, "root"), sh.state("root")) == (None, 1, "running")
    assert sh.spawn_count == {"a": 2, "b": 2, "c": 2}


def test_events_for_unknown_names_and_timers_are_ignored():
    sh = booted(W("a"))
    assert sh.send(Spawned("ghost", 1)) == []
    assert sh.send(Exited("ghost", 1, status=1)) == []
    assert sh.send(TimerFired(9999)) == []
    assert sh.send(Spawned("a", 4242)) == []  # a is already running: a late duplicate
    assert sh.tree.find("a").pid == sh.live["a"]


# ---- backoff ----

POLICY = Backoff(initial=1.0, factor=2.0, max=8.0, jitter=0.1, reset_after=10.0)


def expected_delays(attempts: list[int], seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [backoff.delay(POLICY, n, rng) for n in attempts]


def _crash_and_respawn(sh: FakeShell, name: str) -> float:
    """Crash ``name``; check the respawn waits for exactly one timer; return that timer's delay."""
    actions = sh.crash(name)
    assert spawns(actions) == []
    [timer] = timers(actions)
    due = sh.timers[timer.token]
    assert sh.advance(timer.delay / 2) == []
    assert kinds(sh.advance_to(due)) == [f"spawn {name}"]
    return timer.delay


def test_backoff_delays_the_restart_by_a_start_timer_of_the_computed_delay():
    sh = booted(W("a", backoff=POLICY), W("b"), intensity=10)
    actions = sh.crash("a")
    assert spawns(actions) == []
    [timer] = timers(actions)
    assert timer.delay == expected_delays([0])[0]
    assert 0.9 <= timer.delay <= 1.1
    assert sh.state("a") == "failed"
    assert sh.advance(timer.delay - 0.5) == []
    assert kinds(sh.advance(0.5)) == ["spawn a"]


def test_backoff_delays_grow_and_cap_at_max():
    sh = booted(W("a", backoff=POLICY), intensity=100, period=1.0)
    delays = [_crash_and_respawn(sh, "a") for _ in range(7)]
    assert delays == expected_delays(list(range(7)))
    assert delays[:4] == sorted(delays[:4])
    assert all(d <= 8.0 for d in delays)
    assert all(d >= 8.0 * 0.9 for d in delays[3:])


def test_backoff_resets_after_reset_after_of_stable_running():
    sh = booted(W("a", backoff=POLICY), intensity=100, period=1.0)
    got = [_crash_and_respawn(sh, "a") for _ in range(3)]
    sh.advance(10.0)  # a stable run of reset_after
    got.append(_crash_and_respawn(sh, "a"))
    assert got == expected_delays([0, 1, 2, 0])


def test_backoff_does_not_reset_after_a_shorter_run():
    sh = booted(W("a", backoff=POLICY), intensity=100, period=1.0)
    got = [_crash_and_respawn(sh, "a") for _ in range(3)]
    sh.advance(9.5)
    got.append(_crash_and_respawn(sh, "a"))
    assert got == expected_delays([0, 1, 2, 3])


def test_backoff_restarts_still_count_toward_intensity():
    sh = booted(W("a", backoff=POLICY), W("b"), intensity=2, period=100.0)
    _crash_and_respawn(sh, "a")
    _crash_and_respawn(sh, "a")
    third = sh.crash("a")
    assert kinds(third) == ["term b"]
    assert [t for t in timers(third) if t.delay != 5.0] == []  # only b's SIGKILL timer, no backoff
    assert kinds(sh.exit_after_signal("b")) == ["halt 1"]


def test_backoff_in_a_group_restart_sleeps_after_the_stops_then_starts_in_order():
    sh = booted(W("a", backoff=POLICY), W("b"), strategy=ONE_FOR_ALL, intensity=10)
    assert kinds(sh.crash("a")) == ["term b"]
    stopped = sh.exit_after_signal("b")
    assert kinds(stopped) == []
    [sleep] = timers(stopped)
    assert sleep.delay == expected_delays([0])[0]
    assert kinds(sh.advance(sleep.delay)) == ["spawn a", "spawn b"]


def test_operator_start_during_backoff_cancels_the_timer():
    sh = booted(W("a", backoff=POLICY))
    [timer] = timers(sh.crash("a"))
    actions = sh.request("start", "a")
    assert kinds(actions) == ["spawn a"]
    assert CancelTimer(timer.token) in actions
    assert kinds(sh.advance(100.0)) == []


def test_shutdown_during_backoff_cancels_the_timer_and_halts_0():
    sh = booted(W("a", backoff=POLICY), W("b"))
    [timer] = timers(sh.crash("a"))
    actions = sh.shutdown()
    assert kinds(actions) == ["term b"]
    end = sh.exit_after_signal("b")
    assert CancelTimer(timer.token) in end
    assert kinds(end) == ["halt 0"]
    assert (sh.timers, sh.spawn_count["a"]) == ({}, 1)


# ---- property tests: random trees, random crashes, invariants after every step ----

DECISION = re.compile(r"^(?:restarting (?P<one>\S+)|(?:one_for_all|rest_for_one): restarting (?P<group>[^,\s]+))")


@st.composite
def tree_specs(draw) -> SupervisorSpec:
    names = iter(f"w{i}" for i in range(100))

    def worker() -> WorkerSpec:
        return W(
            next(names),
            restart=draw(st.sampled_from(list(RestartType))),
            shutdown=draw(st.sampled_from([5.0, 1.0, BRUTAL_KILL, INFINITY])),
            backoff=draw(st.sampled_from([None, None, Backoff(0.5, 2.0, 4.0, 0.1, 3.0)])),
        )

    def supervisor(name: str, depth: int) -> SupervisorSpec:
        children = []
        for i in range(draw(st.integers(1, 5))):
            if depth == 0 and draw(st.integers(0, 3)) == 0:
                children.append(supervisor(f"s{i}", 1))
            else:
                children.append(worker())
        return S(
            name,
            *children,
            strategy=draw(st.sampled_from(list(Strategy))),
            intensity=draw(st.integers(0, 4)),
            period=draw(st.sampled_from([1.0, 2.5, 5.0, 10.0])),
            restart=draw(st.sampled_from(list(RestartType))),
        )

    return supervisor("root", 0)


crash_step = st.tuples(st.just("crash"), st.integers(0, 99), st.sampled_from([0, 1, 2, -9, -11]))
step = st.one_of(
    st.tuples(st.just("advance"), st.integers(0, 80).map(lambda t: t / 10)),
    crash_step,
    crash_step,
    st.tuples(st.just("exit_signalled"), st.integers(0, 99)),
    st.tuples(st.just("fail_spawn"), st.integers(0, 99)),
)
steps = st.lists(step, min_size=6, max_size=40)
OPERATOR_VERBS = ("start", "stop", "restart", "detach", "attach")
operator_step = st.tuples(st.sampled_from(OPERATOR_VERBS), st.integers(0, 99))


class Invariants:
    """Watches the tree as it decides and as the shell carries out actions; checks it after every step.

    Restart decisions are observed when they are made, through the core's log call (the core returns its
    actions only after a whole drain, by when a deciding supervisor may have been restarted or a child
    detached); signals and spawns are checked as the shell carries them out.
    """

    def __init__(self, sh: FakeShell, *, operator: bool = False) -> None:
        self.sh = sh
        self.operator = operator  # operator stops and starts go in any order, and may start temporaries
        self.decisions: dict[tuple[str, int], list[float]] = {}  # (supervisor, its incarnation) -> times
        self.temporary_starts: dict[tuple[str, str, int], int] = {}
        self.temporary_sups: dict[tuple[str, int], int] = {}  # (name, parent incarnation) -> first seen
        self.spawns = 0
        self.known = {n.name: n for n in self.all_nodes()}  # detached nodes stay findable here
        sh.on_action = self.on_action
        emit = sh.tree._emit_log

        def spy(level: str, message: str) -> None:
            if m := DECISION.match(message):
                self.on_decision(self.node(m["one"] or m["group"]).parent)
            emit(level, message)

        sh.tree._emit_log = spy

    def node(self, name: str):
        try:
            self.known[name] = self.sh.tree.find(name)
        except FoundationError:
            pass  # detached since
        return self.known[name]

    def all_nodes(self) -> list:
        out, todo = [], [self.sh.tree.root]
        while todo:
            n = todo.pop()
            out.append(n)
            if isinstance(n, Supervisor):
                todo.extend(n.children)
        return out

    def on_decision(self, sup: Supervisor) -> None:
        # (1) restarts a supervisor decides, per window of `period`, never exceed `intensity`;
        # a restarted supervisor starts with a clean slate, as a new OTP supervisor process does
        assert sup.state.value == "running"
        times = self.decisions.setdefault((sup.name, sup.incarnation), [])
        now = self.sh.now
        times.append(now)
        horizon = now - sup.spec.period
        assert len([t for t in times if t > horizon]) <= sup.spec.intensity, (sup.name, times)

    def on_action(self, action) -> None:
        match action:
            case Signal(name, _, _) if not self.operator:
                # (2) a stop goes in reverse start order: every later sibling is already down. Checked when
                # the shell acts, which is sound: after a Signal its supervisor waits for an Exited event.
                node = self.node(name)
                siblings = node.parent.children
                for later in siblings[siblings.index(node) + 1 :]:
                    assert later.state in DOWN, f"signal to {name} while later sibling {later.name} is {later.state}"
                    assert not set(_worker_names(later)) & set(self.sh.live), f"{later.name} has live processes"
            case Spawn(name, spec):
                self.spawns += 1
                node = self.node(name)
                if spec.restart is TEMPORARY and not self.operator:
                    # (3) a temporary worker starts at most once per start of its supervisor
                    key = (name, node.parent.name, node.parent.incarnation)
                    self.temporary_starts[key] = self.temporary_starts.get(key, 0) + 1
                    assert self.temporary_starts[key] == 1, f"temporary {name} spawned twice"
                # (4) at most one live pid per child: FakeShell asserts no live pid for `name` on Spawn

    def check_tree(self) -> None:
        for n in self.all_nodes():
            if isinstance(n, Worker):
                # (4) the core's pid is the one live fake process, and only alive states have one
                assert n.pid == self.sh.live.get(n.name), (n.name, n.pid, self.sh.live.get(n.name))
                assert (n.state in ALIVE) == (n.name in self.sh.live), (n.name, n.state)
            elif n.parent is not None and n.spec.restart is TEMPORARY and not self.operator:
                # (3) for supervisors: at most one start per start of its parent
                first = self.temporary_sups.setdefault((n.name, n.parent.incarnation), n.incarnation)
                assert n.incarnation <= first + 1, f"temporary supervisor {n.name} started again"
            if n.state in DOWN and isinstance(n, Supervisor):
                assert not set(_worker_names(n)) & set(self.sh.live), f"{n.name} is down with live children"
        root_decisions = sum(len(v) for (s, _), v in self.decisions.items() if s == "root")
        assert root_decisions == self.sh.tree.root.restarts  # the log parser sees every root decision


def apply_step(sh: FakeShell, step: tuple) -> None:
    kind = step[0]
    live = sorted(sh.live)
    if kind == "advance":
        sh.advance(step[1])
    elif kind == "crash" and live:
        name, how = live[step[1] % len(live)], step[2]
        if how >= 0:
            sh.crash(name, status=how)
        else:
            sh.kill(name, -how)
    elif kind == "exit_signalled":
        signalled = [n for n in live if sh.signalled.get(n)]
        if signalled:
            sh.exit_after_signal(signalled[step[1] % len(signalled)])
    elif kind == "fail_spawn" and (names := sorted(n.name for n in sh.tree.workers())):
        name = names[step[1] % len(names)]
        sh.fail_next_spawns[name] = sh.fail_next_spawns.get(name, 0) + 1


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=tree_specs(), script=steps)
def test_property_random_crashes_keep_the_invariants(spec, script):
    sh = FakeShell(spec)
    inv = Invariants(sh)
    sh.boot()
    assert inv.spawns == len(_worker_names(sh.tree.root))
    inv.check_tree()
    for step in script:
        apply_step(sh, step)
        inv.check_tree()
    shutdown_and_check(sh, inv)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=tree_specs(), script=st.lists(st.one_of(step, operator_step), min_size=6, max_size=40))
def test_property_operator_requests_mixed_with_crashes_keep_the_invariants(spec, script):
    sh = FakeShell(spec)
    inv = Invariants(sh, operator=True)
    sh.boot()
    extra = iter(f"d{i}" for i in range(100))
    for item in script:
        if item[0] in OPERATOR_VERBS:
            apply_operator_step(sh, inv, item, extra)
        else:
            apply_step(sh, item)
        inv.check_tree()
    shutdown_and_check(sh, inv)


def apply_operator_step(sh: FakeShell, inv: Invariants, item: tuple, extra) -> None:
    verb, i = item
    if verb == "attach":
        sups = sorted(n.name for n in inv.all_nodes() if isinstance(n, Supervisor))
        parent = sups[i % len(sups)]
        call = lambda: sh.attach(parent, W(next(extra), restart=TRANSIENT))  # noqa: E731
    else:
        names = sorted(n.name for n in inv.all_nodes() if n.parent is not None)
        if not names:
            return
        name = names[i % len(names)]
        call = lambda: sh.request(verb, name)  # noqa: E731
    if sh.tree.shutting_down or sh.halt is not None or sh.tree.root.state.value == "stopping":
        with pytest.raises(FoundationError) as info:
            call()
        assert info.value.code is ErrorCode.SHUTTING_DOWN
    else:
        call()


def shutdown_and_check(sh: FakeShell, inv: Invariants) -> None:
    root = sh.tree.root
    root_failed = root.state.value in ("failed", "stopping")  # no shutdown yet: stopping means failing
    sh.fail_next_spawns.clear()
    sh.shutdown()
    for _ in range(1000):
        if sh.halt is not None:
            break
        sh.stop_signalled()
        sh.advance(1000.0)
        inv.check_tree()
    # (5) the tree ends with exactly one Halt, non-zero only if the root had failed; nothing is alive
    assert sh.halt is not None, "the tree never halted"
    assert sh.halt.code == (1 if root_failed else 0)
    assert [a for a in sh.log if not isinstance(a, Log)][-1] == sh.halt
    assert len(halts(sh.log)) == 1
    assert sh.live == {}
    assert all(n.state in DOWN for n in inv.all_nodes())
    inv.check_tree()


@settings(max_examples=60, deadline=None)
@given(
    intensity=st.integers(0, 4),
    period=st.sampled_from([1.0, 2.5, 5.0]),
    gaps=st.lists(st.integers(0, 30).map(lambda t: t / 10), min_size=1, max_size=25),
)
def test_property_one_supervisor_fails_exactly_when_a_window_holds_more_than_intensity(intensity, period, gaps):
    """A model check of the boundary: restart i fails iff more than `intensity` restarts lie in (t - period, t]."""
    sh = booted(W("a"), W("b"), intensity=intensity, period=period)
    times: list[float] = []
    for gap in gaps:
        sh.advance(gap)
        times.append(sh.now)
        actions = sh.crash("a")
        if len([t for t in times if t > sh.now - period]) > intensity:
            assert kinds(actions) == ["term b"]
            assert kinds(sh.exit_after_signal("b")) == ["halt 1"]
            return
        assert kinds(actions) == ["spawn a"]
    assert sh.halt is None


def test_reorder_changes_later_strategy_decisions_and_keeps_unnamed_children_after():
    sh = booted(W("a"), W("b"), W("c"), strategy=REST_FOR_ONE)
    sh.attach("root", W("dyn"))
    sh.tree.reorder("root", ("c", "b", "a"))
    assert child_names(sh) == ["c", "b", "a", "dyn"]
    # rest_for_one: those after b in the new order stop in reverse, then start again in order; c stays.
    assert kinds(sh.crash("b")) == ["term dyn"]
    assert kinds(sh.exit_after_signal("dyn")) == ["term a"]
    assert kinds(sh.exit_after_signal("a")) == ["spawn b", "spawn a", "spawn dyn"]
    with pytest.raises(FoundationError) as info:
        sh.tree.reorder("a", ("x",))
    assert info.value.code is ErrorCode.NOT_A_SUPERVISOR
