"""The resilience services against real daemons and agents (issue 14): a breaker opened by failures from two
agents, half-opened after its timeout and closed by a trial; open before a daemon SIGKILL and open after it; an
agent restart does not forget it; infrastructure errors retried to success on the third try, business errors at
once; several agents on one limiter within its rate (from the log of their grants); a killed agent out of
``services``; tracked timeouts raising an alert; the CLI's --json error shape."""

from __future__ import annotations

import json
import os
import signal
import threading
from typing import Any

import pytest
from helpers import REPO, ctl

from agents.testing import DaemonProcess, wait_for

pytestmark = pytest.mark.timeout(60)


def agents(*names: str, env: str = "") -> str:
    return "".join(f"""
        [[supervisor.children]]
        name = "{name}"
        agent = "tests.agents_for_tests:Guarded"
        working_dir = "{REPO}"
        {env}
    """ for name in names)


BREAKER = """
    [resilience.breaker]
    minimum_calls = 4
    failure_rate = 0.5
    open_for = 3.0  # long enough for the refusals to be seen on a loaded machine before it half-opens
"""


def call(daemon: DaemonProcess, name: str, body: Any, timeout: float = 10) -> Any:
    return daemon.request("call", name=name, body=body, timeout=timeout)["reply"]


def breaker(daemon: DaemonProcess, name: str) -> dict[str, Any]:
    done = ctl(daemon, "breakers", "--json")
    assert done.returncode == 0, done.stderr
    return next(b for b in json.loads(done.stdout)["breakers"] if b["name"] == name)


def test_a_breaker_opened_by_two_agents_half_opens_and_a_trial_closes_it(start_daemon) -> None:
    daemon = start_daemon(BREAKER + agents("a", "b"))
    for name in ("a", "b", "a", "b"):
        assert call(daemon, name, {"call": "fail"}) == {"code": "down", "category": "infrastructure"}
    assert breaker(daemon, "dep")["state"] == "open"
    # Both agents refuse without calling: the change was pushed to each.
    assert call(daemon, "a", {"call": "ok"})["code"] == "breaker_open"
    assert call(daemon, "b", {"call": "ok"})["code"] == "breaker_open"
    wait_for(lambda: breaker(daemon, "dep")["state"] == "half_open", timeout=15, what="half-open after open_for")
    assert call(daemon, "b", {"call": "ok"}) == "ok"  # the trial
    assert breaker(daemon, "dep")["state"] == "closed"
    assert call(daemon, "a", {"call": "ok"}) == "ok"
    changes = [(e["old"], e["new"]) for e in json.loads("[" + ",".join(
        ctl(daemon, "events", "--json", "--type", "breaker_changed").stdout.split()) + "]")]
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_business_errors_do_not_open_it_and_are_not_retried(start_daemon) -> None:
    daemon = start_daemon(BREAKER + agents("a"))
    for _ in range(6):
        assert call(daemon, "a", {"call": "business"}) == {"code": "declined", "category": "business"}
    assert call(daemon, "a", {"call": "ok"}) == "ok"
    assert breaker(daemon, "dep")["state"] == "closed"
    assert call(daemon, "a", {"business_retry": "dep"}) == {"attempts": 1}
    assert call(daemon, "a", {"retry": "inv", "fail": 2}) == {"attempts": 3}  # infrastructure: third try succeeds


def test_the_retry_budget_stops_retries_that_would_make_an_outage_worse(start_daemon) -> None:
    daemon = start_daemon(agents("a") + """
        [resilience.retry_budget]
        ratio = 0.0
        minimum_per_second = 0.1
        window = 10.0
    """)
    assert call(daemon, "a", {"retry": "inv", "fail": 1}) == {"attempts": 2}  # the one retry the minimum allows
    assert call(daemon, "a", {"retry": "inv", "fail": 1}) == {"attempts": 1, "code": "retry_budget_exhausted"}


def test_an_open_breaker_survives_a_daemon_sigkill_and_an_isolated_one_an_agent_kill(start_daemon) -> None:
    daemon = start_daemon(agents("a"))
    assert ctl(daemon, "breaker", "payments", "open").returncode == 0
    assert ctl(daemon, "breaker", "ledger", "isolate").returncode == 0
    assert call(daemon, "a", {"call": "ok", "breaker": "ledger"})["code"] == "breaker_open"
    first = daemon.pid("a")
    os.kill(first, signal.SIGKILL)
    daemon.wait_running("a", not_pid=first)
    assert call(daemon, "a", {"call": "ok", "breaker": "ledger"})["code"] == "breaker_open"
    daemon.kill()
    daemon.wait_exit()
    daemon.start()
    assert breaker(daemon, "payments")["state"] == "open"
    assert breaker(daemon, "ledger")["state"] == "isolated"
    assert call(daemon, "a", {"call": "ok", "breaker": "ledger"})["code"] == "breaker_open"
    assert ctl(daemon, "breaker", "ledger", "close").returncode == 0
    assert call(daemon, "a", {"call": "ok", "breaker": "ledger"}) == "ok"


@pytest.mark.parametrize("lease", [0, 3])
def test_agents_on_one_limiter_stay_within_its_rate(start_daemon, lease: int) -> None:
    rate, burst, each, lease_for = 50.0, 5, 20, 0.1
    names = [f"l{i}" for i in range(4)]
    daemon = start_daemon(f"""
        [resilience.limits.api]
        rate = {rate}
        burst = {burst}
        lease = {lease}
        lease_for = {lease_for}
    """ + agents(*names))
    for name in names:
        daemon.request("send", name=name, body={"ping": True})  # (all connected before the race)
    with daemon.client() as client:
        results: dict[str, list[float]] = {}

        def run(name: str) -> None:
            results[name] = call(daemon, name, {"acquire": "api", "n": each}, timeout=30)

        threads = [threading.Thread(target=run, args=(n,)) for n in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=40)
        requests = client.request("limits")["limits"][0]["granted"]
        assert requests == each * len(names) if not lease else requests < each * len(names)
    grants = sorted(t for times in results.values() for t in times)
    assert len(grants) == each * len(names)
    # a grant's time is read in the agent just after the daemon's decision; a leased token is spent at most
    # lease_for after it left the bucket
    slack = 0.005 + (lease_for if lease else 0.0)
    for i, start in enumerate(grants):
        for j in range(i, len(grants)):
            span = grants[j] - start
            assert j - i + 1 <= burst + rate * (span + slack) + 1e-9, (i, j, span)


def test_a_killed_agent_leaves_services_and_an_open_breaker_hides_one(start_daemon) -> None:
    daemon = start_daemon(agents("r1", "r2", env='env = { CAPABILITY = "pdf" }') + agents("other"))
    wait_for(lambda: len(json.loads(ctl(daemon, "services", "--capability", "pdf", "--json").stdout)["services"])
             == 2, what="both registered")
    assert call(daemon, "other", {"discover": "pdf"})[0]["name"] == "r1"
    killed = daemon.pid("r1")
    os.kill(killed, signal.SIGKILL)

    def listed() -> dict[str, int]:
        return {s["name"]: s["pid"] for s in json.loads(ctl(daemon, "services", "--json").stdout)["services"]}

    wait_for(lambda: listed().get("r1") != killed, what="the killed incarnation out of services")
    assert wait_for(lambda: listed().get("r1"), what="r1's next incarnation registered again") != killed
    assert ctl(daemon, "breaker", "r2", "isolate").returncode == 0
    assert [s["name"] for s in json.loads(ctl(daemon, "services", "--json").stdout)["services"]] == ["r1"]
    assert "r1  pid" in ctl(daemon, "services").stdout


def test_tracked_timeouts_raise_an_alert(start_daemon) -> None:
    daemon = start_daemon(agents("a") + """
        [resilience.breaker]
        minimum_calls = 1000
        [resilience.alerts]
        thresholds = { infrastructure = 15 }
    """)
    for _ in range(15):
        call(daemon, "a", {"call": "fail"})
    alerts = [json.loads(line) for line in ctl(daemon, "events", "--json", "--type", "alert").stdout.splitlines()]
    assert [(a["key"], a["count"]) for a in alerts] == [("infrastructure", 15)]
    groups = json.loads(ctl(daemon, "errors", "--json").stdout)["groups"]
    assert (groups[0]["code"], groups[0]["agent"], groups[0]["total"]) == ("down", "a", 15)


def test_the_cli_prints_the_error_shape_with_json(start_daemon) -> None:
    daemon = start_daemon(agents("a"))
    done = ctl(daemon, "call", "a", '{"acquire": "nope"}', "--json")
    assert done.returncode == 1
    error = json.loads(done.stdout)["error"]
    assert (error["code"], error["category"], error["retryable"]) == ("no_such_limit", "validation", False)
    assert error["context"]["agent"] == "a"
    assert "Traceback" in error["traceback"]
    assert done.stderr.startswith("error: no_such_limit: ")
