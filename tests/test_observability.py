"""Observability against real daemons (issue 13): ``events --follow`` sees a kill and its restart in order, the restart
history survives a daemon restart, ``/metrics`` is scraped with a real HTTP client and parsed with prometheus_client's
own parser, an idle daemon with metrics on still sleeps, and ``doctor`` passes on a clean daemon and fails on a
planted orphan."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from helpers import CHILDREN, SLEEP, ctl, ctl_popen, in_log, wake_ups_in_a_second
from prometheus_client.parser import text_string_to_metric_families

from agents.testing import DaemonProcess, exited, wait_for

METRICS = """
    [metrics]
    listen = "127.0.0.1:0"
"""


def events(daemon: DaemonProcess, *args: str) -> list[dict[str, Any]]:
    done = ctl(daemon, "events", "--json", *args)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def history(daemon: DaemonProcess, *args: str) -> list[dict[str, Any]]:
    done = ctl(daemon, "history", "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["records"]


# ---- events ----


def test_events_follow_shows_a_kill_and_its_restart_in_order(start_daemon) -> None:
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "ticker"
        command = {SLEEP}
    """)
    first = daemon.wait_running("ticker")
    follower = ctl_popen(daemon, "events", "--follow", "--json", "-n", "1")
    try:
        assert follower.stdout is not None
        boot = json.loads(follower.stdout.readline())  # the backlog's last event: the follower is registered
        assert (boot["type"], boot["name"], boot["pid"]) == ("child_started", "ticker", first)
        os.kill(first, signal.SIGKILL)
        seen = [json.loads(follower.stdout.readline()) for _ in range(3)]
    finally:
        follower.terminate()
        follower.communicate(timeout=10)
    assert [e["type"] for e in seen] == ["child_exited", "child_restarted", "child_started"]
    assert (seen[0]["name"], seen[0]["pid"], seen[0]["signal"], seen[0]["expected"]) == ("ticker", first, "SIGKILL",
                                                                                           False)
    assert seen[1]["restarts"] == 1
    assert seen[2]["pid"] == daemon.wait_running("ticker", not_pid=first)
    assert [e["seq"] for e in seen] == [boot["seq"] + 1, boot["seq"] + 2, boot["seq"] + 3]
    assert seen[0]["ts"] <= seen[1]["ts"] <= seen[2]["ts"] <= time.time()


def test_a_rejected_message_is_an_event_and_the_text_is_one_line_an_event(start_daemon) -> None:
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "ticker"
        command = {SLEEP}
    """)
    daemon.wait_running("ticker")
    assert ctl(daemon, "send", "nobody", "{}").returncode == 1
    rejected = events(daemon, "--type", "message_rejected")
    assert [(e["to"], e["code"], e["sender"]) for e in rejected] == [("nobody", "no_such_agent", None)]
    text = ctl(daemon, "events", "ticker")
    assert text.returncode == 0
    assert text.stdout.count("\n") == 1
    assert f"child_started ticker pid={daemon.pid('ticker')}" in text.stdout
    assert ctl(daemon, "events", "-n", "-1").returncode == 1


# ---- restart history ----


def test_the_restart_history_says_why_and_survives_a_daemon_restart(start_daemon, tmp_path: Path) -> None:
    daemon = start_daemon(f"""
        [supervisor]
        intensity = 50
        [[supervisor.children]]
        name = "ticker"
        command = {SLEEP}
        [[supervisor.children]]
        name = "pinger"
        command = {json.dumps([sys.executable, str(CHILDREN / "notify_child.py"), "0", "0.1", "2"])}
        ready = "notify"
        watchdog = 0.5
    """)
    first = daemon.wait_running("ticker")
    os.kill(first, signal.SIGTERM)  # not asked for by the daemon: a crash
    daemon.wait_running("ticker", not_pid=first)
    wait_for(lambda: any(r["child"] == "pinger" for r in history(daemon)), what="the pinger's watchdog restart")
    records = history(daemon)
    ticker = next(r for r in records if r["child"] == "ticker")
    assert (ticker["pid"], ticker["exit"], ticker["signal"], ticker["reason"], ticker["outcome"]) == (
        first, "killed by SIGTERM", "SIGTERM", "crash", "restarted")
    pinger = next(r for r in records if r["child"] == "pinger")
    assert (pinger["reason"], pinger["signal"]) == ("watchdog", "SIGKILL")
    assert any(e.get("cause") == "watchdog" for e in events(daemon, "pinger", "--type", "child_exited"))

    daemon.stop()
    daemon.start()
    again = history(daemon, "ticker")
    assert again[0] == ticker
    text = ctl(daemon, "history", "ticker")
    assert "ticker  crash" in text.stdout
    assert "killed by SIGTERM  -> restarted (#1)" in text.stdout


# ---- metrics ----


def scrape(daemon: DaemonProcess, path: str = "/metrics") -> dict[str, Any]:
    """{sample name: {labels as a sorted tuple: value}} of one real HTTP scrape, parsed by prometheus_client."""
    address = daemon.status()["daemon"]["metrics"]
    with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    out: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_metrics_are_scraped_over_http_and_a_restart_shows_in_its_counter(start_daemon) -> None:
    daemon = start_daemon(METRICS + f"""
        [[supervisor.children]]
        name = "ticker"
        command = {SLEEP}
        [[supervisor.children]]
        name = "other"
        command = {SLEEP}
    """)
    first = daemon.wait_running("ticker")
    daemon.wait_running("other")
    before = scrape(daemon)
    ticker = (("child", "ticker"),)
    assert before["foundation_child_restarts_total"][(*ticker, ("reason", "crash"))] == 0
    assert before["foundation_child_state"][(*ticker, ("state", "running"), ("type", "worker"))] == 1
    assert before["foundation_child_state"][(*ticker, ("state", "failed"), ("type", "worker"))] == 0
    assert before["foundation_child_resident_memory_bytes"][ticker] > 0
    assert before["foundation_child_open_fds"][ticker] >= 1
    assert before["foundation_child_start_time_seconds"][ticker] == pytest.approx(time.time(), abs=60)
    assert before["foundation_supervisor_intensity"][(("supervisor", "root"),)] == 3
    assert before["foundation_loop_lag_seconds_count"][()] > 0
    assert before["foundation_daemon_process_resident_memory_bytes"][()] > 0
    assert not any("pid" in dict(labels) for series in before.values() for labels in series)

    os.kill(first, signal.SIGKILL)
    daemon.wait_running("ticker", not_pid=first)
    after = scrape(daemon)
    assert after["foundation_child_restarts_total"][(*ticker, ("reason", "crash"))] == 1
    assert after["foundation_child_restarts_total"][(("child", "other"), ("reason", "crash"))] == 0
    assert after["foundation_supervisor_restarts_in_period"][(("supervisor", "root"),)] == 1
    assert after["foundation_events_total"][(("type", "child_restarted"),)] == 1
    assert after["foundation_child_start_time_seconds"][ticker] >= before["foundation_child_start_time_seconds"][ticker]

    with pytest.raises(urllib.error.HTTPError) as missing:
        scrape(daemon, "/nothing")
    assert missing.value.code == 404
    missing.value.close()
    by_verb = ctl(daemon, "metrics")
    assert by_verb.returncode == 0
    assert 'foundation_child_restarts_total{child="ticker",reason="crash"} 1.0' in by_verb.stdout


def test_an_idle_daemon_with_metrics_on_does_not_wake_up(start_daemon) -> None:
    daemon = start_daemon(METRICS + f"""
        [[supervisor.children]]
        name = "ticker"
        command = {SLEEP}
    """)
    daemon.wait_running("ticker")
    scrape(daemon)  # the server works; then nobody connects

    assert daemon.proc is not None
    assert wake_ups_in_a_second(daemon.proc.pid) <= 1


def test_a_metrics_address_in_use_is_logged_and_the_tree_runs_on(start_daemon, tmp_path: Path) -> None:
    first = start_daemon(METRICS + f"""
        [[supervisor.children]]
        name = "ticker"
        command = {SLEEP}
    """)
    taken = first.status()["daemon"]["metrics"]
    second = DaemonProcess(tmp_path, f"""
        [metrics]
        listen = "{taken}"
        [[supervisor.children]]
        name = "ticker"
        command = {SLEEP}
    """, name="second").start()
    try:
        second.wait_running("ticker")
        in_log(second, f"metrics: cannot listen on {taken}")
        assert second.status()["daemon"]["metrics"] is None
        assert "cannot listen" in second.status()["daemon"]["metrics_error"]
    finally:
        second.stop()


# ---- doctor ----


def test_doctor_passes_on_a_clean_daemon_and_fails_on_a_planted_orphan(start_daemon, tmp_path: Path) -> None:
    pidfile = tmp_path / "orphan.pid"
    daemon = start_daemon(f"""
        [[supervisor.children]]
        name = "ticker"
        command = {SLEEP}
        [[supervisor.children]]
        name = "counter"
        agent = "agents.examples.counter:Counter"
    """)
    daemon.wait_running("ticker")
    daemon.wait_running("counter")
    clean = ctl(daemon, "doctor", "--window", "0.2")
    assert clean.returncode == 0, clean.stdout
    assert clean.stdout.splitlines()[-1] == "all checks pass"
    assert "ok    process groups" in clean.stdout

    # A child whose grandchild leaves its process group (setsid): out of reach of the group kill.
    planted = f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 1000' & exec sleep 1000"
    assert ctl(daemon, "attach", "planter", "--", "sh", "-c", planted).returncode == 0
    orphan = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="the orphan's pid"))
    try:
        found = ctl(daemon, "doctor", "--window", "0.2", "--json")
        assert found.returncode == 1
        result = json.loads(found.stdout)
        failing = {c["name"]: c["detail"] for c in result["checks"] if not c["ok"]}
        assert list(failing) == ["process groups"]
        assert f"pid {orphan} sleep" in failing["process groups"]
        assert "(under planter)" in failing["process groups"]
        text = ctl(daemon, "doctor", "--window", "0")
        assert "FAIL  process groups" in text.stdout
        assert text.stdout.splitlines()[-1] == "1 of 10 checks failed"
    finally:
        os.kill(orphan, signal.SIGKILL)
        wait_for(lambda: exited(orphan), what="the orphan gone")
