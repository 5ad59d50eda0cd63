"""Staged migrations (DESIGN 3.8): the pure health rules over plain samples and a given clock, the stages and the
rules for moving, and a real daemon stepping, rolling back (by hand, in an emergency, offline, and by itself)."""

from __future__ import annotations

import re

import pytest
from helpers import REPO, ctl

from agents.testing import DaemonProcess, wait_for
from daemon.config import ConfigError, parse_config
from daemon.services import flags_store
from daemon.services.migrations_core import MigrationSpec, Stage, StateChange, plan, readiness
from daemon.services.migrations_health import Sample, Samples, Thresholds, baseline, figures, judge
from ipc import state_migration

pytestmark = pytest.mark.timeout(60)


# ---- the health rules, pure ----

def samples(*rows: tuple[float, int, int, int, int, int], latencies: tuple[tuple[float, float], ...] = ()
            ) -> Samples:
    data = Samples(keep=120)
    for row in rows:
        data.add(Sample(*row))
    data.latencies.extend(latencies)
    return data


def test_a_healthy_window_is_ok() -> None:
    data = samples((0, 0, 0, 0, 0, 0), (10, 100, 1, 100, 0, 0),
                   latencies=tuple((t / 10, 0.010) for t in range(1, 100)))
    verdict = judge(figures(data, now=10, window=60, since=0), baseline_p50=0.008)
    assert verdict.outcome == "ok", verdict
    assert verdict.figures["error_rate"] == 0.01


@pytest.mark.parametrize(("row", "latency", "fails"), [
    ((10, 100, 6, 100, 0, 0), 0.01, "error rate 6.0% > 5%"),
    ((10, 100, 0, 100, 0, 11), 0.01, "11 restarts in the last minute > 10"),
    ((10, 100, 0, 94, 6, 0), 0.01, "delivery success 94.0% < 95%"),
    ((10, 100, 0, 100, 0, 0), 0.021, "p50 latency 21.0 ms > 2x the baseline 10.0 ms"),
])
def test_each_rule_fails_past_its_threshold(row: tuple[float, int, int, int, int, int], latency: float,
                                            fails: str) -> None:
    data = samples((0, 0, 0, 0, 0, 0), row, latencies=tuple((5.0, latency) for _ in range(30)))
    verdict = judge(figures(data, now=10, window=60, since=0), baseline_p50=0.010)
    assert verdict.outcome == "failed"
    assert verdict.failed == (fails,)


def test_exactly_at_the_thresholds_is_not_a_failure() -> None:
    data = samples((0, 0, 0, 0, 0, 0), (10, 100, 5, 95, 5, 10), latencies=tuple((5.0, 0.02) for _ in range(30)))
    assert judge(figures(data, now=10, window=60, since=0), baseline_p50=0.010).failed == ()


def test_state_recovery_is_judged_from_the_first_agent_start() -> None:
    quiet = judge(figures(samples((0, 0, 0, 0, 0, 0), (10, 0, 0, 0, 0, 0)), now=10, window=60, since=0), None)
    assert quiet.figures["state_recovery"] is None
    assert not any("state" in u for u in quiet.unjudged)  # no start: nothing to recover, not a missing datum
    data = Samples(keep=120)
    data.add(Sample(0, starts=5, start_failures=0))
    data.add(Sample(10, starts=104, start_failures=1))  # 99 of 100 in the window: at the threshold
    assert judge(figures(data, now=10, window=60, since=0), None).failed == ()
    data.add(Sample(20, starts=104, start_failures=2))
    verdict = judge(figures(data, now=20, window=60, since=0), None)
    assert verdict.failed == ("state recovery 98.0% < 99% (101 agent starts)",)


def test_a_doubled_median_of_a_few_milliseconds_is_noise() -> None:
    """2.4 ms -> 5.3 ms (seen right after a restart, when queued messages finish in one batch) is not a failure;
    2x and more than 10 ms above the baseline is."""
    data = samples((0, 0, 0, 0, 0, 0), (10, 100, 0, 100, 0, 0), latencies=tuple((5.0, 0.0053) for _ in range(30)))
    assert judge(figures(data, now=10, window=60, since=0), baseline_p50=0.0024).failed == ()
    data = samples((0, 0, 0, 0, 0, 0), (10, 100, 0, 100, 0, 0), latencies=tuple((5.0, 0.0125) for _ in range(30)))
    assert judge(figures(data, now=10, window=60, since=0), baseline_p50=0.0024).failed == (
        "p50 latency 12.5 ms > 2x the baseline 2.4 ms",)


def test_too_few_data_is_not_judged() -> None:
    data = samples((0, 0, 0, 0, 0, 0), (10, 10, 10, 10, 5, 0))  # all failed, but too few of each
    verdict = judge(figures(data, now=10, window=60, since=0), baseline_p50=None)
    assert verdict.outcome == "inconclusive"
    assert len(verdict.unjudged) == 3  # error rate, delivery, latency; restarts are judged
    assert judge(figures(Samples(60), now=0, window=60, since=0), None).outcome == "inconclusive"


def test_the_window_starts_no_earlier_than_the_stage() -> None:
    """Errors of the stage before do not count against this one."""
    data = samples((0, 0, 0, 0, 0, 0), (10, 100, 50, 0, 0, 0), (20, 200, 50, 0, 0, 0))
    assert judge(figures(data, now=20, window=60, since=0), None).failed  # 25 % over everything
    fig = figures(data, now=20, window=60, since=10)
    assert (fig["messages"], fig["error_rate"]) == (100, 0.0)


def test_the_window_slides_and_restarts_count_over_a_minute() -> None:
    data = samples((0, 0, 0, 0, 0, 0), (30, 0, 0, 0, 0, 8), (60, 0, 0, 0, 0, 8), (100, 0, 0, 0, 0, 12))
    fig = figures(data, now=100, window=30, since=0)
    assert fig["restarts_per_min"] == 4.0  # the restarts since t=30 (the last sample at or before now - 60)
    assert judge(fig, None).outcome == "inconclusive"


def test_old_samples_are_dropped_but_one_before_the_horizon_stays() -> None:
    data = Samples(keep=10)
    for t in range(0, 100, 5):
        data.add(Sample(float(t)), [(float(t), 0.01)])
    assert [s.t for s in data.samples] == [85.0, 90.0, 95.0]
    assert [t for t, _ in data.latencies] == [85.0, 90.0, 95.0]


def test_the_baseline_needs_enough_messages() -> None:
    data = samples((0, 0, 0, 0, 0, 0), latencies=tuple((1.0, 0.004 + i / 10000) for i in range(25)))
    assert baseline(data, now=2, window=60, since=0, min_messages=20)["p50_latency"] == pytest.approx(0.0052)
    assert baseline(data, now=2, window=60, since=0, min_messages=30)["p50_latency"] is None


def test_thresholds_are_designs() -> None:
    limits = Thresholds()
    assert (limits.error_rate, limits.restarts_per_min, limits.delivery_success, limits.latency_factor,
            limits.state_recovery) == (0.05, 10.0, 0.95, 2.0, 0.99)


# ---- stages and moving, pure ----

SPEC = MigrationSpec((Stage("registry", (("registry", "on"),), 60.0), Stage("canary", (("enforce", 10),), 0.0),
                      Stage("all", (("enforce", 100),), 0.0)))


def test_stages_are_cumulative_over_an_all_off_stage_0() -> None:
    assert SPEC.values(0) == {"registry": "off", "enforce": "off"}
    assert SPEC.values(2) == {"registry": "on", "enforce": 10}
    assert SPEC.values(3) == {"registry": "on", "enforce": 100}
    assert [SPEC.name(i) for i in range(4)] == ["baseline", "registry", "canary", "all"]


def test_readiness_waits_for_the_hold_and_for_no_failed_gate() -> None:
    assert readiness(SPEC, {"stage": 0, "since": None}, now=0, verdict=None) == []
    assert readiness(SPEC, {"stage": 1, "since": 100.0}, now=130, verdict=None) == [
        "stage registry has held 30s of its 60s"]
    assert readiness(SPEC, {"stage": 1, "since": 100.0}, now=160, verdict={"outcome": "inconclusive"}) == []
    assert readiness(SPEC, {"stage": 1, "since": 100.0}, now=160,
                     verdict={"outcome": "failed", "failed": ["error rate 9.0% > 5%"]}) == [
        "gate failed: error rate 9.0% > 5%"]
    assert readiness(SPEC, {"stage": 3, "since": 0.0}, now=1000, verdict=None) == [
        "already at the last stage (all)"]
    needs = MigrationSpec((Stage("registry", (("registry", "on"),), 0.0, requires=("probe",)),
                           Stage("expand", (), 0.0, StateChange(("profile",), "m:f", "m:g"), ("probe",))))
    assert readiness(needs, {"stage": 0, "since": None}, now=0, verdict=None, running={"web"}) == [
        "stage registry needs probe running"]
    assert readiness(needs, {"stage": 1, "since": 0.0}, now=0, verdict=None, running={"probe"}) == [
        "stage expand needs profile running"]  # the agents its state migration names, too
    assert readiness(needs, {"stage": 1, "since": 0.0}, now=0, verdict=None, running={"probe", "profile"}) == []


def test_plans() -> None:
    assert plan(SPEC, 2, "rollback").to == 1
    assert plan(SPEC, 3, "emergency_rollback", "pager").values == SPEC.values(0)
    with pytest.raises(ValueError, match="already at stage 0"):
        plan(SPEC, 0, "auto_rollback")
    with pytest.raises(ValueError, match="last stage"):
        plan(SPEC, 3, "next")


@pytest.mark.parametrize(("text", "message"), [
    ("[migration]\nhold = 1", "migration.stages: missing"),
    ("[migration]\nspeed = 1\n[[migration.stages]]\nname='a'\nflags={a=1}", "migration.speed: unknown key"),
    ("[[migration.stages]]\nname = 'a'\nflags = {}", "migration.stages[0].flags: missing"),
    ("[[migration.stages]]\nname = 'a'\nflags = {a = 'sure'}", "migration.stages[0].flags.a: expected on, off"),
    ("[[migration.stages]]\nname='a'\nflags={a=1}\n[[migration.stages]]\nname='a'\nflags={b=1}",
     "migration.stages[1].name: 'a' is used"),
    ("[migration]\nwindow = 0\n[[migration.stages]]\nname='a'\nflags={a=1}", "migration.window: expected"),
    ("[[migration.stages]]\nname='a'\nflags={a=1}\nhold=-1", "migration.stages[0].hold: expected"),
    ("[[migration.stages]]\nname='a'\nflags={a=1}\nrequires='web'", "migration.stages[0].requires: expected"),
    ("[[migration.stages]]\nname='a'\nflags={a=1}\nrequires=['web']", "migration.stages[0].requires: 'web' is not"),
])
def test_config_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(text + "\n[supervisor]\n", "f.toml")


# ---- a real daemon ----

def config(hold: float = 0, interval: float = 5.0, window: float = 60.0) -> str:
    return f"""
        [migration]
        hold = {hold}
        interval = {interval}
        window = {window}
        [[migration.stages]]
        name = "registry"
        flags = {{ registry = "on" }}
        [[migration.stages]]
        name = "canary"
        flags = {{ enforce = 10 }}
        [[migration.stages]]
        name = "everyone"
        flags = {{ enforce = 100 }}
        [supervisor]
        [[supervisor.children]]
        name = "probe"
        agent = "tests.flag_agents:FlagProbe"
        working_dir = "{REPO}"
    """


def values(daemon: DaemonProcess) -> dict[str, str]:
    return {f["name"]: f["value"] for f in daemon.request("flags")["flags"]}


def stage(daemon: DaemonProcess) -> int:
    return int(daemon.request("flags", migration=True)["stage"])


def test_next_rollback_and_emergency_rollback_with_events_and_history(start_daemon) -> None:
    daemon = start_daemon(config())
    daemon.wait_running("probe")
    for expected in (1, 2, 3):
        out = ctl(daemon, "migrate", "next")
        assert out.returncode == 0, out.stderr
        assert stage(daemon) == expected
    assert values(daemon) == {"registry": "on", "enforce": "100%"}
    gates = daemon.request("events", types=["gate"])["events"]
    assert [(g["name"], g["decision"]) for g in gates if g["decision"] == "next"] == [("registry", "next"),
                                                                                    ("canary", "next")]
    last = ctl(daemon, "migrate", "next")
    assert last.returncode == 1
    assert "not_ready: already at the last stage" in last.stderr
    assert ctl(daemon, "migrate", "rollback", "--reason", "slow").returncode == 0
    assert values(daemon) == {"registry": "on", "enforce": "10%"}
    assert ctl(daemon, "migrate", "emergency-rollback", "pager").returncode == 0
    assert values(daemon) == {"registry": "off", "enforce": "off"}
    assert stage(daemon) == 0
    # The agent has stage 0's table: pushed, not polled.
    wait_for(lambda: not daemon.request("call", name="probe", body={"enabled": ["registry", "x"]})["reply"],
             timeout=5, what="stage 0 at the agent")
    events = daemon.request("events", types=["stage_changed", "rollback"])["events"]
    assert [(e["type"], e["to"]) for e in events] == [
        ("stage_changed", "registry"), ("stage_changed", "canary"), ("stage_changed", "everyone"),
        ("rollback", "canary"), ("rollback", "baseline")]
    assert events[-1]["emergency"] is True
    assert events[-1]["reason"] == "pager"
    history = daemon.request("flags", migration=True)["history"]
    assert [(h["action"], h["from"], h["to"]) for h in history][-2:] == [
        ("rollback", "everyone", "canary"), ("emergency_rollback", "canary", "baseline")]
    assert history[-1]["by"].startswith("uid=")
    status = ctl(daemon, "migrate", "status")
    assert "stage 0 of 3: baseline" in status.stdout


def test_emergency_rollback_from_any_stage_returns_to_stage_0(start_daemon) -> None:
    daemon = start_daemon(config())
    daemon.wait_running("probe")
    for origin in (1, 2, 3):
        for _ in range(origin):
            daemon.request("migrate", op="next")
        assert stage(daemon) == origin
        assert ctl(daemon, "migrate", "emergency-rollback", f"from {origin}").returncode == 0
        assert stage(daemon) == 0
        assert values(daemon) == {"registry": "off", "enforce": "off"}
    steps = [(h["action"], h["from_index"], h["to_index"]) for h in daemon.request("flags", migration=True)["history"]
             if h["action"] == "emergency_rollback"]
    assert steps == [("emergency_rollback", 1, 0), ("emergency_rollback", 2, 0), ("emergency_rollback", 3, 0)]


@pytest.mark.parametrize("origin", [1, 2])
def test_offline_emergency_rollback_from_an_inner_stage(start_daemon, origin: int) -> None:
    """(Stage 3, the last, is the test below.)"""
    daemon = start_daemon(config())
    for _ in range(origin):
        daemon.request("migrate", op="next")
    daemon.request("shutdown")
    assert daemon.wait_exit() == 0
    out = ctl(daemon, "migrate", "emergency-rollback", "x", "--offline", "--state-dir", str(daemon.state_dir))
    assert out.returncode == 0, out.stderr
    assert f"offline from {['baseline', 'registry', 'canary'][origin]}" in out.stdout
    daemon.start()
    assert stage(daemon) == 0
    assert values(daemon) == {"registry": "off", "enforce": "off"}


def test_next_waits_for_the_hold_time(start_daemon) -> None:
    daemon = start_daemon(config(hold=3600))
    assert ctl(daemon, "migrate", "next").returncode == 0  # stage 0 has no hold
    refused = ctl(daemon, "migrate", "next")
    assert refused.returncode == 1
    assert re.search(r"not_ready: stage registry has held \d+s of its 3600s", refused.stderr)
    status = daemon.request("flags", migration=True)
    assert status["ready"] is False
    assert status["stage"] == 1


def test_validate_says_whether_next_may_go_with_the_stages_own_checks(start_daemon) -> None:
    text = config().replace('flags = {{ registry = "on" }}'.replace("{{", "{").replace("}}", "}"),
                            'flags = { registry = "on" }\n        requires = ["probe"]')
    assert 'requires = ["probe"]' in text
    daemon = start_daemon(text)
    daemon.wait_running("probe")
    assert ctl(daemon, "stop", "probe").returncode == 0
    refused = ctl(daemon, "migrate", "validate")
    assert refused.returncode == 1
    assert refused.stdout == "stage 0 (baseline): not ready: stage registry needs probe running\n"
    assert "not_ready: stage registry needs probe running" in ctl(daemon, "migrate", "next").stderr
    assert ctl(daemon, "start", "probe").returncode == 0
    ready = ctl(daemon, "migrate", "validate")
    assert (ready.returncode, ready.stdout) == (0, "stage 0 (baseline): ready for next\n")
    assert ctl(daemon, "migrate", "next").returncode == 0


def test_offline_emergency_rollback_with_the_daemon_down(start_daemon) -> None:
    daemon = start_daemon(config())
    for _ in range(3):
        daemon.request("migrate", op="next")
    refused = ctl(daemon, "migrate", "emergency-rollback", "x", "--offline", "--state-dir", str(daemon.state_dir))
    assert refused.returncode == 1
    assert "foundationd answers" in refused.stderr
    daemon.request("shutdown")
    assert daemon.wait_exit() == 0
    out = ctl(daemon, "migrate", "emergency-rollback", "daemon wedged", "--offline", "--state-dir",
              str(daemon.state_dir))
    assert out.returncode == 0, out.stderr
    assert "rolled back to stage 0 (baseline) offline from everyone" in out.stdout
    daemon.start()
    daemon.wait_running("probe")
    assert stage(daemon) == 0
    assert values(daemon) == {"registry": "off", "enforce": "off"}
    assert not daemon.request("call", name="probe", body={"enabled": ["registry", "x"]})["reply"]
    step = daemon.request("flags", migration=True)["history"][-1]
    assert (step["action"], step["reason"], step["offline"]) == ("emergency_rollback", "daemon wedged", True)


def test_a_failing_stage_is_rolled_back_by_itself(start_daemon) -> None:
    daemon = start_daemon(config(interval=0.2, window=30))
    daemon.wait_running("probe")
    daemon.request("migrate", op="next")
    daemon.request("migrate", op="next")
    assert stage(daemon) == 2
    for i in range(40):  # 25 % of the stage's messages fail: over the 5 % gate
        daemon.request("send", name="probe", body={"fail": i % 4 == 0})
    wait_for(lambda: stage(daemon) == 1, timeout=10, what="the automatic rollback")
    assert values(daemon)["enforce"] == "off"
    rollback = daemon.request("events", types=["rollback"])["events"][-1]
    assert rollback["automatic"] is True
    assert rollback["by"] == "health gates"
    assert "error rate" in rollback["reason"]
    gate = [e for e in daemon.request("events", types=["gate"])["events"] if e["decision"] == "rollback"]
    assert (gate[-1]["source"], gate[-1]["outcome"], gate[-1]["name"]) == ("migration", "failed", "canary")
    alert = daemon.request("events", types=["alert"])["events"][-1]
    assert alert["source"] == "migration"
    assert "canary" in alert["message"]
    # Stage 1 starts a fresh window: the errors of stage 2 do not roll it back too.
    daemon.request("send", name="probe", body={"ok": True})
    assert daemon.request("flags", migration=True)["stage"] == 1


def test_the_store_keeps_the_last_steps(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flags_store, "KEEP_LOG", 5)
    store = flags_store.FlagStore(tmp_path / "flags")
    try:
        store.save(table={"version": 1, "flags": {}}, migration={"stage": 0})
        for i in range(8):
            store.save(log=[{"i": i}])
        store.save(log=[{"i": 8}, {"i": 9}])
        assert [r["i"] for r in store.log(10)] == [5, 6, 7, 8, 9]
        assert [r["i"] for r in store.log(2)] == [8, 9]
        assert store.load() == ({"version": 1, "flags": {}}, {"stage": 0})
    finally:
        store.close()


# ---- state migrations ----

EXPAND = {"id": "expand", "forward": "tests.flag_agents:split_name", "reverse": "tests.flag_agents:drop_split"}
CONTRACT = {"id": "contract", "forward": "tests.flag_agents:drop_name", "reverse": "tests.flag_agents:join_name"}


def test_the_state_plan_undoes_what_is_not_wanted_then_applies_what_is_new() -> None:
    assert state_migration.plan([], [EXPAND, CONTRACT]) == [("forward", EXPAND), ("forward", CONTRACT)]
    assert state_migration.plan([EXPAND, CONTRACT], [EXPAND]) == [("reverse", CONTRACT)]
    assert state_migration.plan([EXPAND, CONTRACT], []) == [("reverse", CONTRACT), ("reverse", EXPAND)]
    assert state_migration.plan([EXPAND], [EXPAND]) == []
    changed = {**EXPAND, "forward": "tests.flag_agents:other"}  # the config changed an applied one: redo it
    assert state_migration.plan([EXPAND, CONTRACT], [changed]) == [
        ("reverse", CONTRACT), ("reverse", EXPAND), ("forward", changed)]


def test_running_a_plan_there_and_back_gives_the_state_back() -> None:
    start = {"name": "Ada Lovelace", "visits": 3}
    there, applied = state_migration.run(start, [], state_migration.plan([], [EXPAND, CONTRACT]))
    assert there == {"first": "Ada", "last": "Lovelace", "visits": 3}
    assert applied == [EXPAND, CONTRACT]
    back, applied = state_migration.run(there, applied, state_migration.plan(applied, []))
    assert back == start
    assert applied == []
    assert start == {"name": "Ada Lovelace", "visits": 3}  # each function works on its own copy
    with pytest.raises(ValueError, match="cannot run"):
        state_migration.run(start, [], [("forward", {**EXPAND, "forward": "tests.flag_agents:broken"})])


def test_the_stages_say_what_each_agent_should_have() -> None:
    spec = parse_config(state_config(), "f.toml").migration
    assert spec is not None
    assert spec.state_agents() == ["profile"]
    assert [spec.state_wanted("profile", i) for i in range(3)] == [[], [EXPAND], [EXPAND, CONTRACT]]
    assert spec.state_wanted("probe", 2) == []
    assert spec.describe()[2]["state"] == {"agents": ("profile",), "forward": CONTRACT["forward"],
                                           "reverse": CONTRACT["reverse"]}


@pytest.mark.parametrize(("state", "message"), [
    ("{ agents = ['profile'], forward = 'm:f' }", "migration.stages[0].state.reverse: missing"),
    ("{ agents = [], forward = 'm:f', reverse = 'm:g' }", "migration.stages[0].state.agents: expected"),
    ("{ agents = ['profile'], forward = 'mf', reverse = 'm:g' }", "migration.stages[0].state.forward: expected"),
    ("{ agents = ['probe'], forward = 'm:f', reverse = 'm:g' }",
     "migration.stages[0].state.agents: 'probe' is not an agent of the tree"),
    ("{ agents = ['profile'], forward = 'm:f', reverse = 'm:g', when = 1 }", "migration.stages[0].state.when"),
])
def test_state_migration_config_errors_name_the_key(state: str, message: str) -> None:
    text = f"""
        [[migration.stages]]
        name = "expand"
        state = {state}
        [supervisor]
        [[supervisor.children]]
        name = "profile"
        agent = "tests.flag_agents:Profile"
        [[supervisor.children]]
        name = "probe"
        command = ["true"]
    """
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(text, "f.toml")


def state_config(interval: float = 5.0) -> str:
    return f"""
        [migration]
        hold = 0
        interval = {interval}
        window = 30
        [[migration.stages]]
        name = "expand"
        flags = {{ profile_v2 = "on" }}
        state = {{ agents = ["profile"], forward = "{EXPAND['forward']}", reverse = "{EXPAND['reverse']}" }}
        [[migration.stages]]
        name = "contract"
        state = {{ agents = ["profile"], forward = "{CONTRACT['forward']}", reverse = "{CONTRACT['reverse']}" }}
        [supervisor]
        intensity = 100
        [[supervisor.children]]
        name = "profile"
        agent = "tests.flag_agents:Profile"
        working_dir = "{REPO}"
        backoff = {{ initial = 0.05, max = 0.2 }}
    """


V0 = {"name": "Ada Lovelace", "visits": 2}
V1 = {"name": "Ada Lovelace", "first": "Ada", "last": "Lovelace", "visits": 2}
V2 = {"first": "Ada", "last": "Lovelace", "visits": 2}


def profile(daemon: DaemonProcess) -> dict[str, object]:
    state: dict[str, object] = daemon.request("state", name="profile")["state"]
    return state


def reaches(daemon: DaemonProcess, expected: dict[str, object], what: str) -> None:
    wait_for(lambda: profile(daemon) == expected and daemon.node("profile")["state"] == "running", timeout=15,
             what=what)


def test_a_state_migration_goes_with_its_stage_and_every_rollback_reverses_it(start_daemon) -> None:
    daemon = start_daemon(state_config())
    daemon.wait_running("profile")
    for _ in range(2):
        daemon.request("send", name="profile", body={"visit": True})
    reaches(daemon, {"name": "Ada Lovelace", "visits": 2}, "two visits")
    assert ctl(daemon, "migrate", "next").returncode == 0
    reaches(daemon, V1, "expanded")
    assert ctl(daemon, "migrate", "next").returncode == 0
    reaches(daemon, V2, "contracted")
    assert daemon.request("call", name="profile", body={})["reply"] == V2  # the agent runs on the migrated state
    assert ctl(daemon, "migrate", "rollback", "--reason", "contract too early").returncode == 0
    reaches(daemon, V1, "contract reversed (one stage back)")
    assert ctl(daemon, "migrate", "next").returncode == 0
    reaches(daemon, V2, "contracted again")
    assert ctl(daemon, "migrate", "emergency-rollback", "pager").returncode == 0
    reaches(daemon, V0, "everything reversed (emergency)")
    history = daemon.request("flags", migration=True)["history"]
    assert [(h["action"], h.get("state")) for h in history] == [
        ("next", {"profile": ["expand"]}), ("next", {"profile": ["expand", "contract"]}),
        ("rollback", {"profile": ["expand"]}), ("next", {"profile": ["expand", "contract"]}),
        ("emergency_rollback", {"profile": []})]
    migrated = daemon.request("events", types=["state_migrated"])["events"]
    assert [(e["name"], e["failed"]) for e in migrated] == [("expand", []), ("contract", []), ("expand", []),
                                                             ("contract", []), ("baseline", [])]
    status = ctl(daemon, "migrate", "status").stdout
    assert ("2 contract  profile_v2=on state[profile]: tests.flag_agents:drop_name "
            "(back: tests.flag_agents:join_name)") in status
    logs = ctl(daemon, "logs", "profile", "-n", "100").stdout
    assert "state migration: reverse contract (tests.flag_agents:join_name)" in logs
    # Offline: the daemon is down; the agent reverses its state as it starts with the daemon.
    daemon.request("migrate", op="next")
    reaches(daemon, V1, "expanded again")  # (next needs the agent a state migration names running)
    daemon.request("migrate", op="next")
    reaches(daemon, V2, "contracted before the offline rollback")
    daemon.request("shutdown")
    assert daemon.wait_exit() == 0
    out = ctl(daemon, "migrate", "emergency-rollback", "wedged", "--offline", "--state-dir", str(daemon.state_dir))
    assert out.returncode == 0, out.stderr
    daemon.start()
    daemon.wait_running("profile")
    assert profile(daemon) == V0  # before it handled anything
    step = daemon.request("flags", migration=True)["history"][-1]
    assert (step["action"], step["offline"], step["state"]) == ("emergency_rollback", True, {"profile": []})


def test_an_automatic_rollback_reverses_the_stages_state_migration(start_daemon) -> None:
    daemon = start_daemon(state_config(interval=0.2))
    daemon.wait_running("profile")
    daemon.request("send", name="profile", body={"visit": True})
    daemon.request("send", name="profile", body={"visit": True})
    daemon.request("migrate", op="next")
    reaches(daemon, V1, "expanded")
    for i in range(40):  # 25 % fail: the stage's gate fails
        daemon.request("send", name="profile", body={"fail": i % 4 == 0, "visit": True})
    wait_for(lambda: stage(daemon) == 0, timeout=15, what="the automatic rollback")
    # The expansion reversed, and every message handled once (those after the rollback on the old shape).
    reaches(daemon, {"name": "Ada Lovelace", "visits": 2 + 30}, "the expansion reversed")
    rollback = daemon.request("events", types=["rollback"])["events"][-1]
    assert (rollback["automatic"], rollback["to"]) == (True, "baseline")


def test_a_state_migration_that_fails_leaves_the_state_and_rolls_the_stage_back(start_daemon) -> None:
    text = state_config().replace("tests.flag_agents:split_name", "tests.flag_agents:broken")
    daemon = start_daemon(text)
    daemon.wait_running("profile")
    daemon.request("send", name="profile", body={"visit": True})
    reaches(daemon, {"name": "Ada Lovelace", "visits": 1}, "a visit")
    daemon.request("migrate", op="next")
    wait_for(lambda: stage(daemon) == 0, timeout=20, what="the rollback of the stage whose migration failed")
    reaches(daemon, {"name": "Ada Lovelace", "visits": 1}, "the agent back on its untouched state")
    (migrated, *_) = daemon.request("events", types=["state_migrated"])["events"]
    assert migrated["failed"] == ["profile"]
    rollback = daemon.request("events", types=["rollback"])["events"][-1]
    # Whichever saw it first: the restart's check, or the state-recovery gate (a failed agent start).
    assert re.fullmatch(r"state migration failed on profile|state recovery .*", rollback["reason"]), rollback
