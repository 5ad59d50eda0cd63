"""Feature flags (DESIGN 3.8): the bucket against published vectors (docs/flags.md's table is the data), the pure
flag set, the agents' copy, the config, and a real daemon pushing changes to a real agent."""

from __future__ import annotations

import re

import pytest
from helpers import REPO, ctl
from hypothesis import given
from hypothesis import strategies as st

from agents.sdk import Agent
from agents.testing import AgentHarness, DaemonProcess, wait_for
from daemon.config import ConfigError, parse_config
from daemon.services.flags_core import FlagSet
from ipc.flags import FlagTable, bucket, evaluate, parse_value

pytestmark = pytest.mark.timeout(60)

DOC = REPO / "docs" / "flags.md"


def vectors() -> list[tuple[str, str, int]]:
    rows = re.findall(r"^\| `([^`]*)` \| (?:`([^`]*)`|\(empty\)) \| (\d+) \|$", DOC.read_text(), re.M)
    return [(name, ident, int(expected)) for name, ident, expected in rows]


def test_the_documented_vectors_are_there() -> None:
    assert len(vectors()) >= 16


@pytest.mark.parametrize(("name", "ident", "expected"), vectors())
def test_bucket_matches_the_published_vectors(name: str, ident: str, expected: int) -> None:
    assert bucket(name, ident) == expected


def test_unleash_gradual_rollout_spec_cases() -> None:
    """Unleash client-specification 03-gradual-rollout-user-id-strategy (group AB12A)."""
    table = {"kind": "percentage", "killed": False}
    assert evaluate({**table, "percent": 100}, "AB12A", "123")
    assert evaluate({**table, "percent": 50}, "AB12A", "122")
    assert not evaluate({**table, "percent": 50}, "AB12A", "155")
    assert not evaluate({**table, "percent": 0}, "AB12A", "122")


@given(st.text(min_size=1, max_size=20), st.text(max_size=20), st.integers(0, 100), st.integers(0, 100))
def test_raising_the_percentage_never_turns_an_id_off(name: str, ident: str, low: int, high: int) -> None:
    low, high = sorted((low, high))
    flag = {"kind": "percentage", "killed": False}
    if evaluate({**flag, "percent": low}, name, ident):
        assert evaluate({**flag, "percent": high}, name, ident)


def test_a_flag_at_30_keeps_every_id_that_was_on_when_it_moves_to_60() -> None:
    ids = [f"user-{i}" for i in range(2000)]
    at = {p: {i for i in ids if evaluate({"percent": p}, "checkout", i)} for p in (30, 60)}
    assert at[30] <= at[60]
    assert 0.25 < len(at[30]) / len(ids) < 0.35
    assert 0.55 < len(at[60]) / len(ids) < 0.65


@pytest.mark.parametrize(("value", "parsed"), [
    ("on", ("boolean", 100)), ("off", ("boolean", 0)), (True, ("boolean", 100)), ("false", ("boolean", 0)),
    (30, ("percentage", 30)), ("30", ("percentage", 30)), ("30%", ("percentage", 30)), (0, ("percentage", 0))])
def test_values(value: object, parsed: tuple[str, int]) -> None:
    assert parse_value(value) == parsed


@pytest.mark.parametrize("value", ["maybe", 101, -1, 2.5, None, "", "50.5"])
def test_bad_values(value: object) -> None:
    with pytest.raises(ValueError, match="on, off or a percentage"):
        parse_value(value)


def test_the_flag_set_kill_switch_and_versions() -> None:
    flags = FlagSet()
    assert [c.name for c in flags.set("checkout", 30)] == ["checkout"]
    assert flags.version == 1
    assert flags.set("checkout", "30") == []  # a no-op changes nothing, not even the version
    assert flags.version == 1
    flags.kill("checkout")
    assert not evaluate(flags.flags["checkout"], "checkout", "user-6")  # bucket 1: on at any percentage > 0
    flags.set("checkout", "on")  # still killed: the new value waits underneath
    assert flags.flags["checkout"] == {"kind": "boolean", "percent": 100, "killed": True}
    flags.revive("checkout")
    assert evaluate(flags.flags["checkout"], "checkout", "user-6")
    assert flags.kill("ghost")[0].new == {"kind": "boolean", "percent": 0, "killed": True}
    with pytest.raises(KeyError):
        flags.revive("nope")
    assert flags.delete("ghost")[0].new is None
    assert flags.delete("ghost") == []
    assert flags.version == 6


def test_config_seeds_only_unknown_flags_and_stage_values_keep_kill_switches() -> None:
    flags = FlagSet({"a": {"kind": "percentage", "percent": 60, "killed": False}}, version=4)
    changes = flags.seed({"a": 10, "b": "on"})
    assert [c.name for c in changes] == ["b"]
    assert flags.flags["a"]["percent"] == 60
    flags.kill("b")
    flags.apply({"a": "off", "b": "on"})
    assert flags.flags["b"]["killed"]
    assert flags.table()["version"] == flags.version == 7


def test_an_agents_table_keeps_the_newest() -> None:
    table = FlagTable()
    new = {"version": 5, "flags": {"a": {"kind": "boolean", "percent": 100, "killed": False}}}
    old = {"version": 4, "flags": {}}
    assert table.take({"flags": new})
    assert table.take({"flags": old})  # a push, taken by the runtime, but older: ignored
    assert table.enabled("a", "x")
    assert not table.take({"tick": 3})
    assert not table.enabled("unknown", "x")


class Gate(Agent):
    def handle_call(self, msg: object, state: object) -> tuple[object, object]:
        return self.enabled("checkout", msg), state


def test_the_harness_answers_enabled_from_set_flag() -> None:
    h = AgentHarness(Gate)
    assert h.call("user-6") is False
    h.set_flag("checkout", 30)
    assert h.call("user-6") is True  # bucket 1
    assert h.call("user-5") is False  # bucket 96
    h.set_flag("checkout", 30, killed=True)
    assert h.call("user-6") is False


@pytest.mark.parametrize(("text", "message"), [
    ('[flags]\ncheckout = "maybe"', "flags.checkout: expected on, off or a percentage"),
    ("[flags]\ncheckout = 101", "flags.checkout: expected on, off or a percentage"),
    ('[flags]\n"a:b" = 1', "invalid flag name"),
    ("flags = 3", "flags: expected a table"),
])
def test_config_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(text + "\n[supervisor]\n", "f.toml")


CONFIG = f"""
    [flags]
    checkout = 30
    parser = "on"
    [supervisor]
    [[supervisor.children]]
    name = "probe"
    agent = "tests.flag_agents:FlagProbe"
    working_dir = "{REPO}"
"""


def enabled(daemon: DaemonProcess, flag: str, ident: str) -> bool:
    return bool(daemon.request("call", name="probe", body={"enabled": [flag, ident]})["reply"])


def test_flags_reach_a_running_agent_at_once_and_survive_a_restart(start_daemon) -> None:
    daemon = start_daemon(CONFIG)
    daemon.wait_running("probe")
    # At hello: the table from the config.
    assert enabled(daemon, "checkout", "user-6")
    assert not enabled(daemon, "checkout", "user-3")
    assert ctl(daemon, "flag", "check", "checkout", "user-3").stdout == "false\n"
    assert ctl(daemon, "flag", "check", "checkout", "user-6").stdout == "true\n"
    # A change is pushed: the agent answers from its own copy.
    out = ctl(daemon, "flag", "set", "checkout", "60", "--reason", "more")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: enabled(daemon, "checkout", "user-3"), timeout=5, what="60 % reached the agent")
    assert ctl(daemon, "flag", "kill", "checkout").returncode == 0
    wait_for(lambda: not enabled(daemon, "checkout", "user-6"), timeout=5, what="the kill switch reached the agent")
    listing = daemon.request("flags")
    assert {f["name"]: f["value"] for f in listing["flags"]} == {"checkout": "60% (killed)", "parser": "on"}
    events = daemon.request("events", types=["flag_changed"])["events"]
    assert [(e["name"], e["new"]) for e in events][-2:] == [("checkout", "60%"), ("checkout", "60% (killed)")]
    assert events[-2]["reason"] == "more"
    assert events[-2]["by"].startswith("uid=")
    # Errors.
    bad = ctl(daemon, "flag", "set", "checkout", "lots")
    assert bad.returncode == 1
    assert "bad_request" in bad.stderr
    missing = ctl(daemon, "flag", "revive", "ghost")
    assert missing.returncode == 1
    assert "no_such_flag" in missing.stderr
    # Persisted: a new daemon on the same state directory has them, and the config does not override them.
    daemon.request("shutdown")
    assert daemon.wait_exit() == 0
    daemon.start()
    daemon.wait_running("probe")
    assert {f["name"]: f["value"] for f in daemon.request("flags")["flags"]}["checkout"] == "60% (killed)"
    assert ctl(daemon, "flag", "revive", "checkout").returncode == 0
    wait_for(lambda: enabled(daemon, "checkout", "user-3"), timeout=5, what="revived")


def test_at_the_agent_a_flag_moved_from_30_to_60_keeps_every_id_that_was_on(start_daemon) -> None:
    """The issue's test, end to end: the agent answers from the table the daemon pushed to it."""
    daemon = start_daemon(CONFIG)
    daemon.wait_running("probe")
    ids = [f"user-{i}" for i in range(1000)]

    def on_at_agent() -> set[str]:
        return set(daemon.request("call", name="probe", body={"on_among": ["checkout", ids]})["reply"])

    at30 = on_at_agent()
    assert 250 < len(at30) < 350
    version = daemon.request("call", name="probe", body={"version": True})["reply"]
    assert ctl(daemon, "flag", "set", "checkout", "60").returncode == 0
    wait_for(lambda: daemon.request("call", name="probe", body={"version": True})["reply"] > version, timeout=5,
             what="60 % pushed to the agent")
    at60 = on_at_agent()
    assert at30 <= at60
    assert 550 < len(at60) < 650
    assert at60 == {i for i in ids if evaluate({"kind": "percentage", "percent": 60, "killed": False}, "checkout", i)}
