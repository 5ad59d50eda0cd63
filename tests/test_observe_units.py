"""The pure parts of observability, without a daemon: the event stream (fake clocks), the restart tracker fed by the
real core driven through FakeShell, the history store on a temporary LMDB, and doctor's verdicts from plain facts."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.core.spec import Backoff, Strategy, SupervisorSpec, WorkerSpec
from daemon.services.doctor import Facts, Sample, checks
from daemon.services.events import EventStream, matcher, render
from daemon.services.history import HistoryStore, RestartTracker
from tests.fakeshell import FakeShell

WALL0, MONO0 = 1_800_000_000.0, 1000.0  # FakeShell's clock starts at 1000.0


def W(name: str, **kw) -> WorkerSpec:
    return WorkerSpec(name, command=("/bin/true",), **kw)


class Observed:
    """The core under FakeShell, its events turned into stream events, and a tracker reading them."""

    def __init__(self, *children, **kw) -> None:
        self.sh = FakeShell(SupervisorSpec("root", children=children, **kw))
        self.stream = EventStream(wall=lambda: WALL0 + (self.sh.now - MONO0), mono=lambda: self.sh.now)
        self.tracker = RestartTracker()
        self.records: list[dict] = []
        self.stream.listeners.append(lambda events: self.records.extend(self.tracker.feed(events)))

    def pump(self) -> list[dict]:
        before = self.stream.seq
        self.stream.from_core(self.sh.tree.take_events())
        return self.stream.tail(self.stream.seq - before)


# ---- the stream ----


def test_core_events_become_stream_events_with_wall_time_and_seq() -> None:
    ob = Observed(W("a"))
    ob.sh.boot()
    ob.pump()
    ob.sh.now += 2.5
    pid = ob.sh.pid("a")
    ob.sh.kill("a")
    events = ob.pump()
    assert [e["type"] for e in events] == ["child_exited", "child_restarted", "child_started"]
    exited = events[0]
    assert exited["ts"] == pytest.approx(WALL0 + 2.5)
    assert (exited["name"], exited["pid"], exited["signal"], exited["status"]) == ("a", pid, "SIGKILL", None)
    assert "at" not in exited
    assert "cause" not in exited
    assert list(exited)[:2] == ["ts", "type"]
    assert [e["seq"] for e in events] == [2, 3, 4]  # (1: the boot's child_started; transitions are not in it)
    assert ob.stream.counts == {"child_started": 2, "child_exited": 1, "child_restarted": 1}


def test_a_kill_the_daemon_made_says_its_cause_once() -> None:
    ob = Observed(W("a"))
    ob.sh.boot()
    ob.stream.kill_cause(ob.sh.pid("a"), "watchdog")
    ob.sh.kill("a")
    ob.sh.kill("a")  # the next run dies by another hand: no cause
    exits = [e for e in ob.pump() if e["type"] == "child_exited"]
    assert [e.get("cause") for e in exits] == ["watchdog", None]


def test_publish_tail_match_and_followers() -> None:
    now = [100.0]
    stream = EventStream(wall=lambda: now[0], mono=lambda: 0.0, keep=3)
    seen: list[list[str]] = []
    gone: list[int] = []
    stream.follow(lambda events: seen.append([e["type"] for e in events]) is None)
    stream.follow(lambda events: gone.append(1) is not None)  # returns False: dropped after its first batch
    for n in range(4):
        stream.publish("message_rejected", sender=None, to=f"x{n}", code="no_such_agent", message="m")
    assert [e["to"] for e in stream.tail(10)] == ["x1", "x2", "x3"]  # the ring keeps 3
    assert stream.tail(10, matcher("x2"))[0]["seq"] == 3
    assert stream.tail(10, matcher(None, ["child_started"])) == []
    assert len(seen) == 4
    assert gone == [1]
    assert stream.followers == 1
    assert stream.tail(0) == []
    line = render(stream.tail(1)[0])
    assert "message_rejected to=x3 code=no_such_agent" in line
    assert "sender" not in line


# ---- restart history from the core's own decisions ----


def test_a_crash_is_recorded_with_its_exit_and_counted_by_reason() -> None:
    ob = Observed(W("a"), W("b"))
    ob.sh.boot()
    pid = ob.sh.pid("a")
    ob.sh.crash("a", status=3)
    ob.stream.kill_cause(ob.sh.pid("b"), "max_memory")
    ob.sh.kill("b")
    ob.pump()
    assert [(r["child"], r["pid"], r["exit"], r["status"], r["reason"], r["outcome"], r["restarts"])
            for r in ob.records] == [("a", pid, "exited with status 3", 3, "crash", "restarted", 1),
                                     ("b", ob.records[1]["pid"], "killed by SIGKILL", None, "max_memory",
                                      "restarted", 1)]
    assert ob.records[1]["signal"] == "SIGKILL"
    assert ob.tracker.restarts == {("a", "crash"): 1, ("b", "max_memory"): 1}


def test_a_backoff_delay_and_a_sibling_restart_by_strategy() -> None:
    ob = Observed(W("a", backoff=Backoff(initial=0.5, jitter=0.0)), W("b"), strategy=Strategy.REST_FOR_ONE)
    ob.sh.boot()
    ob.sh.crash("a")
    ob.pump()
    assert [(r["child"], r["reason"], r["delay"]) for r in ob.records] == [("a", "crash", 0.5), ("b", "strategy", 0.5)]


def test_intensity_escalates_and_the_failed_supervisor_restarts_for_intensity() -> None:
    inner = SupervisorSpec("inner", children=(W("a"),), intensity=1, period=5.0)
    ob = Observed(inner, W("z"))
    ob.sh.boot()
    ob.sh.crash("a")
    ob.sh.crash("a")  # one too many for inner
    ob.sh.stop_signalled()
    ob.pump()
    assert [(r["child"], r["reason"], r["outcome"]) for r in ob.records] == [
        ("a", "crash", "restarted"), ("a", "crash", "escalated"), ("inner", "intensity", "restarted")]
    assert "more than 1 restarts in 5s" in ob.records[2]["exit"]


def test_a_parked_child_is_recorded_as_parked_and_not_counted() -> None:
    ob = Observed(W("a", on_intensity="park"), intensity=0, period=5.0)
    ob.sh.boot()
    ob.sh.crash("a")
    ob.pump()
    assert [(r["child"], r["outcome"]) for r in ob.records] == [("a", "parked")]
    assert ob.tracker.restarts == {}


def test_a_stop_asked_for_and_a_temporary_exit_are_not_restarts() -> None:
    ob = Observed(W("a"), W("t", restart="temporary"))
    ob.sh.boot()
    ob.sh.request("stop", "a")
    ob.sh.stop_signalled()
    ob.sh.crash("t")
    ob.pump()
    assert ob.records == []


# ---- the store ----


def test_the_store_keeps_the_last_records_across_reopening(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "history", keep=3)
    store.append([{"child": f"c{n}", "n": n} for n in range(5)])
    assert [r["n"] for r in store.last(10)] == [2, 3, 4]
    store.close()
    store = HistoryStore(tmp_path / "history", keep=3)
    store.append([{"child": "c9", "n": 9}])
    assert [r["n"] for r in store.last(10)] == [3, 4, 9]
    assert [r["n"] for r in store.last(2)] == [4, 9]
    assert [r["n"] for r in store.last(10, lambda r: r["child"] == "c3")] == [3]
    assert store.last(0) == []
    store.close()


# ---- doctor's verdicts ----


def facts(**kw) -> Facts:
    base = {"first": Sample(), "second": Sample(), "probe": {"commit_s": 0.002, "stale_readers": {}},
            "root_state": "running", "parked": [], "headroom": [("root", 0, 3)], "under_systemd": False,
            "watchdog": None, "spawn_path": "foundation-exec", "guardian_pid": 7}
    return Facts(**(base | kw))


def verdicts(f: Facts) -> dict[str, bool]:
    return {c["name"]: c["ok"] for c in checks(f)}


def test_a_clean_daemon_passes_every_check() -> None:
    assert all(verdicts(facts()).values())
    assert set(verdicts(facts())) == {"tree", "process groups", "zombies", "broker", "probe commit", "stale readers",
                                      "intensity headroom", "systemd watchdog", "exec helper", "guardian"}


@pytest.mark.parametrize(("change", "failing"), [
    ({"root_state": "stopping"}, "tree"),
    ({"parked": ["a"]}, "tree"),
    ({"first": Sample(strays={5: "pid 5 sleep"}), "second": Sample(strays={5: "pid 5 sleep"})}, "process groups"),
    ({"first": Sample(zombies={6: "pid 6"}), "second": Sample(zombies={6: "pid 6"})}, "zombies"),
    ({"first": Sample(depth=3), "second": Sample(depth=9)}, "broker"),
    ({"probe": {"commit_s": 2.0, "stale_readers": {}}}, "probe commit"),
    ({"probe": {"commit_error": "disk full", "stale_readers": {}}}, "probe commit"),
    ({"probe": {"commit_s": 0.001, "stale_readers": {"broker": [42]}}}, "stale readers"),
    ({"headroom": [("root", 0, 3), ("inner", 2, 2)]}, "intensity headroom"),
    ({"under_systemd": True, "watchdog": None}, "systemd watchdog"),
    ({"spawn_path": "setpriv"}, "exec helper"),
    ({"guardian_pid": None}, "guardian"),
])
def test_each_check_fails_on_its_own_fault(change: dict, failing: str) -> None:
    found = verdicts(facts(**change))
    assert [name for name, ok in found.items() if not ok] == [failing]


def test_what_passed_in_one_sample_only_does_not_fail() -> None:
    passing = facts(first=Sample(strays={5: "x"}, zombies={6: "z"}, depth=9), second=Sample(zombies={7: "z"}, depth=2))
    assert all(verdicts(passing).values())
    assert verdicts(facts(under_systemd=True, watchdog=15.0))["systemd watchdog"]
