"""Staged migrations (DESIGN 3.8): the pure health rules over plain samples and a given clock, the stages and the
rules for moving, and a real daemon stepping, rolling back (by hand, in an emergency, offline, and by itself)."""

from __future__ import annotations

import re

import pytest
from helpers import REPO, ctl

from agents.testing import DaemonProcess, wait_for
from daemon.config import ConfigError, parse_config
from daemon.services import flags_store
from daemon.services.migrations_core import MigrationSpec, Stage, plan, readiness
from daemon.services.migrations_health import Sample, Samples, Thresholds, baseline, figures, judge

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
    assert (limits.error_rate, limits.restarts_per_min, limits.delivery_success, limits.latency_factor) == (
        0.05, 10.0, 0.95, 2.0)


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


def test_next_waits_for_the_hold_time(start_daemon) -> None:
    daemon = start_daemon(config(hold=3600))
    assert ctl(daemon, "migrate", "next").returncode == 0  # stage 0 has no hold
    refused = ctl(daemon, "migrate", "next")
    assert refused.returncode == 1
    assert re.search(r"not_ready: stage registry has held \d+s of its 3600s", refused.stderr)
    status = daemon.request("flags", migration=True)
    assert status["ready"] is False
    assert status["stage"] == 1


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
