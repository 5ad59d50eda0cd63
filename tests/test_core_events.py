"""The core says what happened as typed events (daemon/core/events.py), driven by fake processes: no daemon."""

from __future__ import annotations

import orjson

from daemon.core import events
from daemon.core.spec import Backoff, SupervisorSpec, WorkerSpec
from daemon.core.tree import EVENTS_KEPT
from tests.fakeshell import FakeShell


def W(name: str, **kw) -> WorkerSpec:
    return WorkerSpec(name, command=("/bin/true",), **kw)


def shell(*children, **kw) -> FakeShell:
    return FakeShell(SupervisorSpec("root", children=children, **kw))


def transitions(taken: list[events.CoreEvent]) -> list[tuple[str, str, str]]:
    return [(e.name, e.old, e.new) for e in taken if isinstance(e, events.Transition)]


def test_boot_is_a_table_of_transitions_and_starts() -> None:
    sh = shell(W("a"), W("b"))
    sh.boot()
    taken = sh.tree.take_events()
    assert transitions(taken) == [
        ("root", "stopped", "starting"),
        ("a", "stopped", "starting"), ("a", "starting", "running"),
        ("b", "stopped", "starting"), ("b", "starting", "running"),
        ("root", "starting", "running"),
    ]
    assert [(e.name, e.pid) for e in taken if isinstance(e, events.ChildStarted)] == [
        ("a", sh.tree.find("a").pid), ("b", sh.tree.find("b").pid)]
    assert sh.tree.take_events() == []  # taken once


def test_a_crash_is_an_exit_then_a_restart_with_its_count_and_delay() -> None:
    sh = shell(W("a", backoff=Backoff(initial=0.5, jitter=0.0)))
    sh.boot()
    pid = sh.live["a"]
    sh.tree.take_events()
    sh.crash("a", status=3)
    taken = sh.tree.take_events()
    exited = [e for e in taken if isinstance(e, events.ChildExited)]
    assert [(e.name, e.pid, e.reason, e.expected) for e in exited] == [("a", pid, "exited with status 3", False)]
    restarted = [e for e in taken if isinstance(e, events.ChildRestarted)]
    assert [(e.name, e.supervisor, e.restarts, e.delay) for e in restarted] == [("a", "root", 1, 0.5)]
    assert exited[0].at == sh.now


def test_a_stop_asked_for_is_an_expected_exit() -> None:
    sh = shell(W("a"))
    sh.boot()
    sh.request("stop", "a")
    sh.stop_signalled()
    exited = [e for e in sh.tree.take_events() if isinstance(e, events.ChildExited)]
    assert [e.expected for e in exited] == [True]


def test_intensity_exceeded_escalates_to_the_parent_and_halts() -> None:
    sh = shell(W("a"), intensity=1, period=5.0)
    sh.boot()
    sh.crash("a")
    sh.crash("a")  # second restart within the window
    sh.stop_signalled()
    taken = sh.tree.take_events()
    exceeded = [e for e in taken if isinstance(e, events.IntensityExceeded)]
    assert [(e.supervisor, e.intensity, e.period, e.last) for e in exceeded] == [("root", 1, 5.0, "a")]
    assert [e.supervisor for e in taken if isinstance(e, events.SupervisorFailed)] == ["root"]
    assert [(e.code, e.type) for e in taken if isinstance(e, events.Halted)] == [(1, "halted")]
    assert transitions(taken)[-1] == ("root", "stopping", "failed")


def test_a_spawn_failure_is_a_start_failure() -> None:
    sh = shell(W("a"))
    sh.fail_next_spawns["a"] = 1
    sh.boot()
    failed = [e for e in sh.tree.take_events() if isinstance(e, events.StartFailed)]
    assert [e.name for e in failed] == ["a"]


def test_events_are_plain_data_with_their_type() -> None:
    sh = shell(W("a"))
    sh.boot()
    for event in sh.tree.take_events():
        data = orjson.loads(orjson.dumps(event.to_dict()))
        assert data["type"] == event.type
        assert data["at"] == event.at
    assert events.ChildStarted.type == "child_started"
    assert events.IntensityExceeded.type == "intensity_exceeded"


def test_undrained_events_are_bounded_and_the_drops_counted() -> None:
    sh = shell(W("a"), intensity=10**9, period=1.0)
    sh.boot()
    while sh.tree.events_dropped == 0:
        sh.crash("a")
    assert len(sh.tree.take_events()) == EVENTS_KEPT


def test_an_operators_attach_whose_first_start_fails_is_removed_and_counts_no_restart() -> None:
    sh = shell(W("a"), intensity=1, period=5.0)
    sh.boot()
    sh.fail_next_spawns["ghost"] = 1
    actions = sh._run(sh.tree.attach("root", W("ghost"), synchronous=True))
    assert sh.tree.find_quiet("ghost") is None
    assert [a.names for a in actions if type(a).__name__ == "Removed"] == [("ghost",)]
    assert sh.tree.root.restarts == 0
    assert sh.tree.root.history == ()
    assert sh.state("root") == "running"


def test_an_attached_agent_that_dies_before_ready_is_rejected_with_the_reason() -> None:
    sh = shell(W("a"))
    sh.boot()
    sh._run(sh.tree.attach("root", W("agent", agent="m:C"), synchronous=True))
    node = sh.tree.find("agent")
    sh.crash("agent", status=1)  # before its hello
    assert node.rejected == "agent failed to start: exited with status 1 before it was ready"
    assert sh.tree.find_quiet("agent") is None
    assert sh.spawn_count["agent"] == 1  # not restarted


def test_a_reload_attach_keeps_the_restart_rules() -> None:
    sh = shell(W("a"), intensity=5, period=5.0)
    sh.boot()
    sh.fail_next_spawns["b"] = 1
    sh._run(sh.tree.attach("root", W("b")))  # not synchronous: a failed start is a crash, restarted
    assert sh.tree.find("b").state == "running"
    assert sh.spawn_count["b"] == 2


def test_a_start_failure_at_boot_is_named_in_the_halting_line() -> None:
    sh = shell(W("a"), W("ghost"))
    sh.fail_next_spawns["ghost"] = 1
    sh.boot()
    sh.stop_signalled()
    assert sh.halt is not None
    assert sh.halt.reason.startswith("root supervisor failed: ghost failed to start: ")


def test_a_child_set_to_park_is_left_down_instead_of_failing_its_supervisor() -> None:
    sh = shell(W("good"), W("loop", on_intensity="park"), intensity=2, period=5.0)
    sh.boot()
    sh.crash("loop")
    sh.crash("loop")
    sh.tree.take_events()
    sh.crash("loop")  # the third restart in the window would exceed intensity 2
    taken = sh.tree.take_events()
    assert [(e.name, e.supervisor) for e in taken if isinstance(e, events.ChildParked)] == [("loop", "root")]
    assert not [e for e in taken if isinstance(e, events.SupervisorFailed)]
    assert sh.state("root") == "running"
    assert len(sh.tree.root.history) == 2
    assert sh.state("loop") == "failed"
    assert "loop" not in sh.live
    described = next(c for c in sh.tree.snapshot()["children"] if c["name"] == "loop")
    assert described["parked"] is True
    assert described["last_exit"].endswith("parked: more than 2 restarts in 5s")
    sh.request("start", "loop")  # the operator releases it
    assert sh.state("loop") == "running"
    assert len(sh.tree.root.history) == 2  # the parked restart was not counted


def test_without_park_the_same_loop_fails_the_supervisor() -> None:
    sh = shell(W("good"), W("loop"), intensity=2, period=5.0)
    sh.boot()
    for _ in range(3):
        sh.crash("loop")
    assert sh.state("root") == "stopping"
