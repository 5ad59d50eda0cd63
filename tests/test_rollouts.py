"""Rollouts of agent versions (DESIGN 3.8): the pure phases, targets and verdicts over plain data and a given clock,
and real daemons moving a canary then all, rolling a crashing version back by itself, aborting, and resuming after
a restart."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from helpers import REPO, ctl

from agents.testing import DaemonProcess, wait_for
from daemon.core.spec import WorkerSpec
from daemon.services import rollout_core as core

pytestmark = pytest.mark.timeout(60)

NEW = "tests.flag_agents:CounterV2"
OLD = "agents.examples.counter:Counter"


# ---- the pure core ----

TREE = {"name": "root", "type": "supervisor", "children": [
    {"name": "web", "type": "worker"},
    {"name": "pool", "type": "supervisor", "children": [{"name": f"c{i}", "type": "worker"} for i in range(1, 5)]},
]}


def specs(names: list[str], agent: str | None = OLD) -> dict[str, WorkerSpec]:
    return {n: WorkerSpec(n, agent=agent, command=() if agent else ("true",), env=(("A", "1"),)) for n in names}


def test_targets_are_a_supervisors_workers_or_named_children() -> None:
    assert core.select(TREE, "pool", None) == ["c1", "c2", "c3", "c4"]
    assert core.select(TREE, None, ["c3", "web"]) == ["c3", "web"]
    for sup, children, error in ((None, None, "either"), ("pool", ["c1"], "either"), ("nope", None, "no supervisor"),
                                 (None, ["c9"], "no worker"), (None, ["c1", "c1"], "twice")):
        with pytest.raises(ValueError, match=error):
            core.select(TREE, sup, children)


@pytest.mark.parametrize(("count", "percent", "size"), [(4, 10, 1), (4, 50, 2), (10, 10, 1), (10, 25, 3),
                                                         (1, 10, 1), (4, 100, 4), (3, 0.1, 1)])
def test_the_canary_is_a_share_rounded_up_and_at_least_one(count: int, percent: float, size: int) -> None:
    assert core.canary_size(count, percent) == size


def test_versions_move_forward_and_back_exactly() -> None:
    spec = WorkerSpec("c1", agent=OLD, env=(("A", "1"), ("B", "2")))
    new = core.forward(spec, {"agent": NEW, "env": {"B": "3", "C": "4"}})
    assert new.agent == NEW
    assert dict(new.env) == {"A": "1", "B": "3", "C": "4"}
    assert core.backward(new, core.version_of(spec)) == spec
    assert core.forward(spec, {"agent": None, "env": {"C": "4"}}).agent == OLD


def test_a_version_that_changes_nothing_or_an_agent_for_a_command_is_refused() -> None:
    with pytest.raises(ValueError, match="needs an agent"):
        core.check_version({"agent": None, "env": {}}, specs(["c1"]))
    with pytest.raises(ValueError, match="runs a command"):
        core.check_version({"agent": NEW, "env": {}}, specs(["c1"], agent=None))
    with pytest.raises(ValueError, match="already at that version"):
        core.check_version({"agent": OLD, "env": {"A": "1"}}, specs(["c1"]))
    with pytest.raises(ValueError, match="module:Class"):
        core.check_version({"agent": "nocolon", "env": {}}, specs(["c1"]))


def begin(hold: float = 10) -> dict[str, Any]:
    names = ["c1", "c2", "c3", "c4"]
    return core.start("r", names, specs(names), {"agent": NEW, "env": {}}, percent=10, hold=hold, interval=1,
                      window=60, now=100.0, by="me")


def test_canary_then_all_then_done_each_after_its_hold() -> None:
    record = begin()
    assert record["phase"] == "canary"
    assert record["changed"] == ["c1"]
    assert record["previous"]["c2"]["agent"] == OLD
    assert core.decide(record, 200.0, []).kind == "wait"  # not applied yet
    record = core.applied(record, 101.0)
    assert core.decide(record, 110.9, []).kind == "wait"  # holding
    decision = core.decide(record, 111.0, [])
    assert decision == core.Decision("advance", ("c2", "c3", "c4"))
    record = core.applied(core.advance(record, decision.names, 111.0, "rollout"), 112.0)
    assert record["phase"] == "all"
    assert record["changed"] == ["c1", "c2", "c3", "c4"]
    assert core.decide(record, 121.9, []).kind == "wait"
    assert core.decide(record, 122.0, []).kind == "finish"
    record = core.finish(record, 122.0)
    assert record["phase"] == "done"
    assert core.decide(record, 999.0, ["x"]).kind == "wait"
    assert [s["step"] for s in record["history"]] == ["canary", "all", "done"]


def test_stages_widen_the_canary_step_by_step_to_all() -> None:
    names = [f"c{i}" for i in range(1, 11)]
    record = core.start("r", names, specs(names), {"agent": NEW, "env": {}}, percent=10, hold=0, interval=1,
                        window=60, now=0.0, by="me", stages=[10, 50, 100])
    assert record["changed"] == ["c1"]
    seen = []
    while (decision := core.decide(core.applied(record, 1.0), 1.0, [])).kind == "advance":
        record = core.advance(record, decision.names, 1.0, "rollout")
        seen.append((record["phase"], len(record["changed"])))
    assert seen == [("canary", 5), ("all", 10)]
    assert decision.kind == "finish"
    assert [s["step"] for s in record["history"]] == ["canary", "stage", "all"]
    for bad in ([50, 10, 100], [10, 50], [0, 100], [10, 10, 100]):
        with pytest.raises(ValueError, match="stage"):
            core.start("r", names, specs(names), {"agent": NEW}, percent=10, hold=0, interval=1, window=60,
                       now=0.0, by="me", stages=bad)
    everyone = core.start("r", names, specs(names), {"agent": NEW}, percent=100, hold=0, interval=1, window=60,
                          now=0.0, by="me")
    assert everyone["phase"] == "all"
    assert everyone["changed"] == names


def test_a_failure_rolls_back_every_changed_child_even_while_applying() -> None:
    record = begin()
    assert core.decide(record, 100.5, ["c1 crashed"]) == core.Decision("rollback", ("c1",), "c1 crashed")
    record = core.applied(core.advance(core.applied(record, 101.0), ("c2", "c3", "c4"), 111.0, "rollout"), 112.0)
    decision = core.decide(record, 113.0, ["error rate 9.0% > 5%", "c3 crashed"])
    assert decision.kind == "rollback"
    assert decision.names == ("c1", "c2", "c3", "c4")
    assert decision.reason == "error rate 9.0% > 5%; c3 crashed"
    back = core.roll_back(record, 113.0, "health gates", decision.reason, aborted=False)
    assert back["phase"] == "rolled_back"
    assert back["history"][-1]["names"] == ["c1", "c2", "c3", "c4"]
    assert core.roll_back(record, 113.0, "me", "no", aborted=True)["phase"] == "aborted"


def test_too_few_data_when_the_hold_ends_pauses_until_resumed() -> None:
    limits = core.Thresholds()
    short = core.too_few({"messages": 3, "sends": 40}, limits)
    assert short == ["3 messages handled by the changed children, fewer than 20"]
    assert core.too_few({"messages": 20, "sends": 20}, limits) == []
    record = core.applied(begin(), 101.0)
    assert core.decide(record, 105.0, [], short).kind == "wait"  # still holding: not judged yet
    decision = core.decide(record, 111.0, [], short)
    assert decision.kind == "pause"
    assert decision.reason == "inconclusive: 3 messages handled by the changed children, fewer than 20"
    paused = core.pause(record, 111.0, decision.reason)
    assert paused["phase"] == "paused"
    assert core.decide(paused, 999.0, [], short).kind == "wait"  # it waits for an operator...
    assert core.decide(paused, 999.0, ["c1 crashed"]).kind == "rollback"  # ...unless a gate fails
    resumed = core.resume(paused, 120.0, "me")
    assert (resumed["phase"], resumed["accepted"]) == ("canary", 0)
    assert core.decide(resumed, 121.0, [], short) == core.Decision("advance", ("c2", "c3", "c4"))
    after = core.applied(core.advance(resumed, ("c2", "c3", "c4"), 121.0, "rollout"), 122.0)
    assert core.decide(after, 132.0, [], short).kind == "pause"  # the next stage is judged again
    assert [s["step"] for s in after["history"]] == ["canary", "paused", "resumed", "all"]
    with pytest.raises(ValueError, match="not paused"):
        core.resume(after, 133.0, "me")


def test_a_changed_child_that_restarts_or_fails_is_a_crash_an_operator_restart_is_not() -> None:
    before = {"c1": 2, "c2": 0, "c3": 0, "c4": 0}
    observed = {"c1": {"restarts": 2, "state": "running"}, "c2": {"restarts": 1, "state": "running"},
                "c3": {"restarts": 0, "state": "failed"}}
    assert core.crashed(before, observed) == ["c2 crashed after the change (1 restarts)", "c3 failed", "c4 is gone"]
    assert core.crashed({"c1": 2}, {"c1": {"restarts": 2, "state": "running"}}) == []


# ---- real daemons ----

LEDGER, LEDGER2, FLAKY = ("tests.flag_agents:Ledger", "tests.flag_agents:LedgerV2",
                          "tests.flag_agents:FlakyLedger")


def config(agent: str = OLD, feeder: bool = False) -> str:
    children = "".join(f"""
        [[supervisor.children.children]]
        name = "c{i}"
        agent = "{agent}"
        working_dir = "{REPO}"
        backoff = {{ initial = 0.05, max = 0.2 }}
""" for i in range(1, 5))
    load = f"""
        [[supervisor.children]]
        name = "feeder"
        agent = "tests.flag_agents:Feeder"
        working_dir = "{REPO}"
""" if feeder else ""
    return f"""
        [supervisor]
        intensity = 100
        period = 5.0
{load}
        [[supervisor.children]]
        name = "pool"
        intensity = 1000
        period = 5.0
{children}"""


def agents(daemon: DaemonProcess) -> dict[str, str]:
    return {c["name"]: c.get("agent", "") for c in daemon.node("pool")["children"]}


def rollout(daemon: DaemonProcess) -> dict[str, Any]:
    result: dict[str, Any] = daemon.request("rollouts")["rollout"]
    return result


def events(daemon: DaemonProcess, kind: str) -> list[dict[str, Any]]:
    out = ctl(daemon, "events", "--json", "-n", "1000")
    return [e for line in out.stdout.splitlines() if (e := json.loads(line))["type"] == kind]


def all_running(daemon: DaemonProcess) -> bool:
    return all(c["state"] == "running" for c in daemon.node("pool")["children"])


def gates(daemon: DaemonProcess) -> list[dict[str, Any]]:
    return [e for e in events(daemon, "gate") if e["source"] == "rollout"]


def ledger(daemon: DaemonProcess, name: str) -> list[int]:
    return settled_state(daemon, name)["seen"]


def settled_state(daemon: DaemonProcess, name: str) -> dict[str, Any]:
    def idle() -> bool:
        stats = daemon.status()["broker"]
        return name not in stats["mailboxes"] and name in stats["connected"]

    wait_for(idle, timeout=30, interval=0.05, what=f"{name}'s mailbox to drain")
    state: dict[str, Any] = daemon.request("state", name=name)["state"]
    return state


def test_a_healthy_version_goes_10_50_100_under_load_with_nothing_lost(start_daemon: Any) -> None:
    daemon = start_daemon(config(LEDGER, feeder=True))
    wait_for(lambda: all_running(daemon), timeout=15, what="the pool running")
    daemon.wait_running("feeder")
    daemon.request("send", name="feeder", body={"go": ["c1", "c2", "c3", "c4"], "every": 0.02})
    out = ctl(daemon, "rollout", "start", "--supervisor", "pool", "--agent", LEDGER2, "--stages", "10,50,100",
              "--hold", "2", "--interval", "0.2")
    assert out.returncode == 0, out.stderr
    assert "changed 1 of 4: c1" in out.stdout
    wait_for(lambda: rollout(daemon)["applied"], timeout=15, what="the canary applied")
    assert agents(daemon) == {"c1": LEDGER2, "c2": LEDGER, "c3": LEDGER, "c4": LEDGER}
    wait_for(lambda: len(rollout(daemon)["changed"]) == 2, timeout=20, what="the second stage (50 %)")
    wait_for(lambda: rollout(daemon)["phase"] in ("done", "rolled_back", "paused"), timeout=30,
             what="the rollout done")
    assert rollout(daemon)["phase"] == "done", rollout(daemon)
    daemon.request("send", name="feeder", body={"stop": True})
    assert agents(daemon) == dict.fromkeys(("c1", "c2", "c3", "c4"), LEDGER2)
    wait_for(lambda: all_running(daemon), timeout=15, what="the pool running the new version")
    assert daemon.request("call", name="c3", body={"version": True})["reply"] == 2
    sent = daemon.request("call", name="feeder", body={"sent": True})["reply"]
    for name in ("c1", "c2", "c3", "c4"):  # every message of the feeder, once, across the versions
        assert ledger(daemon, name) == list(range(1, sent + 1)), name
    steps = [e["step"] for e in events(daemon, "rollout")]
    assert steps == ["canary", "stage", "all", "done"]
    assert not events(daemon, "rollback")
    decided = [(g["stage"], g["decision"]) for g in gates(daemon) if g["decision"] != "wait"]
    assert decided == [(0, "advance"), (1, "advance"), (2, "finish")]  # each judged on enough data, none paused
    assert all(g["outcome"] == "ok" or g["unjudged"] for g in gates(daemon))
    status = ctl(daemon, "rollout", "status")
    assert status.returncode == 0
    assert "done" in status.stdout


def test_a_canary_failing_20_percent_is_rolled_back_at_the_first_judged_gate(start_daemon: Any) -> None:
    """A 10 % canary whose version fails 20 % of its messages: 2 % of the pool's, but the canary is judged on its
    own. It is rolled back by itself at the first gate check that has the minimum sample (within one interval of
    having it, long before its hold ends), the pool ends on the old version, and every message sent meanwhile is
    in a ledger once, or failed under the canary (only those the failing version refuses)."""
    daemon = start_daemon(config(LEDGER, feeder=True))
    wait_for(lambda: all_running(daemon), timeout=15, what="the pool running")
    out = ctl(daemon, "rollout", "start", "--supervisor", "pool", "--agent", FLAKY, "--canary", "10",
              "--hold", "600", "--interval", "0.2")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: rollout(daemon)["applied"], timeout=15, what="the canary applied")
    daemon.request("send", name="feeder", body={"go": ["c1", "c2", "c3", "c4"], "every": 0.02})
    wait_for(lambda: rollout(daemon)["phase"] == "rolled_back", timeout=30, what="the automatic rollback")
    wait_for(lambda: daemon.request("call", name="feeder", body={"sent": True})["reply"] >= 100, timeout=30,
             what="more traffic after the rollback")
    daemon.request("send", name="feeder", body={"stop": True})
    record = rollout(daemon)
    assert record["changed"] == ["c1"]
    rate = re.fullmatch(r"error rate (\d+\.\d)% > 5%", record["reason"])
    assert rate is not None, record["reason"]
    assert 15 <= float(rate.group(1)) <= 25  # the canary's own rate (every 5th of any run of its messages)
    judged = [g for g in gates(daemon) if g["applied"] and g["figures"]["messages"] >= 20]
    assert judged[0]["decision"] == "rollback"  # the first check with enough data decided
    assert judged[0]["outcome"] == "failed"
    assert judged[0]["figures"]["rest_error_rate"] == 0.0
    (rollback,) = events(daemon, "rollback")
    assert (rollback["automatic"], rollback["by"], rollback["names"]) == (True, "health gates", ["c1"])
    wait_for(lambda: all_running(daemon), timeout=15, what="the pool running")
    assert agents(daemon) == dict.fromkeys(("c1", "c2", "c3", "c4"), LEDGER)
    assert daemon.request("call", name="c1", body={"version": True})["reply"] == 1
    sent = daemon.request("call", name="feeder", body={"sent": True})["reply"]
    seen = ledger(daemon, "c1")
    assert len(seen) == len(set(seen))  # nothing twice
    missing = set(range(1, sent + 1)) - set(seen)
    assert missing, "the canary failed none"
    assert all(n % 5 == 0 for n in missing), sorted(missing)  # nothing lost but what the canary refused
    assert max(missing) < sent  # the old version handled multiples of 5 again after the rollback
    for name in ("c2", "c3", "c4"):
        assert ledger(daemon, name) == list(range(1, sent + 1)), name


def test_too_few_data_pauses_and_resume_goes_on(start_daemon: Any) -> None:
    daemon = start_daemon(config())
    wait_for(lambda: all_running(daemon), timeout=15, what="the pool running")
    out = ctl(daemon, "rollout", "start", "--supervisor", "pool", "--agent", NEW, "--id", "r1", "--stages",
              "50,100", "--hold", "0.3", "--interval", "0.1")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: rollout(daemon)["phase"] == "paused", timeout=15, what="the pause")
    assert agents(daemon) == {"c1": NEW, "c2": NEW, "c3": OLD, "c4": OLD}  # it did not move on
    status = ctl(daemon, "rollout", "status")
    assert "rollout r1: paused" in status.stdout
    assert "inconclusive: 0 messages handled by the changed children, fewer than 20" in status.stdout
    assert "rollout resume r1" in status.stdout
    (paused,) = [e for e in events(daemon, "rollout") if e["step"] == "paused"]
    assert paused["reason"].startswith("inconclusive")
    assert any(g["decision"] == "pause" for g in gates(daemon))
    wrong = ctl(daemon, "rollout", "resume", "r2")
    assert wrong.returncode == 1
    assert "bad_request" in wrong.stderr
    assert ctl(daemon, "rollout", "resume", "r1").returncode == 0
    wait_for(lambda: agents(daemon) == dict.fromkeys(("c1", "c2", "c3", "c4"), NEW), timeout=15,
             what="the next stage after the resume")
    wait_for(lambda: rollout(daemon)["phase"] == "paused", timeout=15, what="the last stage paused too")
    assert rollout(daemon)["stage"] == 1
    assert ctl(daemon, "rollout", "resume").returncode == 0
    wait_for(lambda: rollout(daemon)["phase"] == "done", timeout=15, what="the rollout done")
    assert not events(daemon, "rollback")
    assert [e["step"] for e in events(daemon, "rollout")] == ["canary", "paused", "resumed", "all", "paused",
                                                              "resumed", "done"]
    again = ctl(daemon, "rollout", "resume")
    assert again.returncode == 1
    assert "not_ready" in again.stderr


def test_a_version_that_crashes_on_start_is_rolled_back_by_itself(start_daemon: Any) -> None:
    daemon = start_daemon(config())
    wait_for(lambda: all_running(daemon), timeout=15, what="the pool running")
    out = ctl(daemon, "rollout", "start", "--children", "c1,c2,c3,c4", "--agent", "tests.flag_agents:CrashOnStart",
              "--canary", "50", "--hold", "30", "--interval", "0.1")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: rollout(daemon)["phase"] == "rolled_back", timeout=20, what="the automatic rollback")
    record = rollout(daemon)
    assert record["changed"] == ["c1", "c2"]
    assert re.search(r"c[12] (crashed|failed)", record["reason"]), record["reason"]  # whichever was seen first
    wait_for(lambda: all_running(daemon), timeout=15, what="the old version running again")
    assert agents(daemon) == dict.fromkeys(("c1", "c2", "c3", "c4"), OLD)
    assert daemon.request("call", name="c1", body={"get": True})["reply"] == {"count": 0}
    (rollback,) = events(daemon, "rollback")
    assert rollback["automatic"] is True
    assert rollback["names"] == ["c1", "c2"]
    assert rollback["by"] == "health gates"
    assert any(a["source"] == "rollout" for a in events(daemon, "alert"))


def test_abort_restores_and_a_restart_reports_it(start_daemon: Any) -> None:
    daemon = start_daemon(config())
    wait_for(lambda: all_running(daemon), timeout=15, what="the pool running")
    out = ctl(daemon, "rollout", "start", "--supervisor", "pool", "--agent", NEW, "--env", "VERSION=2",
              "--canary", "50", "--hold", "60", "--interval", "0.1")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: rollout(daemon)["applied"], timeout=15, what="the canary applied")
    assert agents(daemon) == {"c1": NEW, "c2": NEW, "c3": OLD, "c4": OLD}
    busy = ctl(daemon, "rollout", "start", "--supervisor", "pool", "--agent", NEW)
    assert busy.returncode == 1
    assert "busy" in busy.stderr
    # A restart of the daemon keeps the rollout where it was: the canary runs the new version again.
    daemon.stop()
    daemon.start()
    wait_for(lambda: agents(daemon) == {"c1": NEW, "c2": NEW, "c3": OLD, "c4": OLD}, timeout=15,
             what="the canary applied again after a restart")
    assert rollout(daemon)["phase"] == "canary"
    aborted = ctl(daemon, "rollout", "abort", "--reason", "wrong build")
    assert aborted.returncode == 0, aborted.stderr
    assert "aborted" in aborted.stdout
    wait_for(lambda: agents(daemon) == dict.fromkeys(("c1", "c2", "c3", "c4"), OLD), timeout=15,
             what="the old version back")
    wait_for(lambda: all_running(daemon), timeout=15, what="the pool running")
    (rollback,) = events(daemon, "rollback")
    assert rollback["automatic"] is False
    assert rollback["reason"] == "wrong build"
    again = ctl(daemon, "rollout", "abort")
    assert again.returncode == 1
    assert "not_ready" in again.stderr
