"""The SDK's connection manager (agents/http.py, issue 14 item 7) against a real local HTTP server and a real daemon:
5xx answers and timeouts open the dependency's host-wide breaker, after which requests are refused without reaching
the server; a 4xx is an answer, not a failure; a failing health check stops the request; the dependency's rate limit
spaces the requests the server receives (with and without leased tokens)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from agents_for_tests import HttpUser
from helpers import REPO, ctl

from agents.testing import AgentHarness, DaemonProcess

pytestmark = pytest.mark.timeout(60)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.hits: list[tuple[str, float]] = []  # (path, CLOCK_MONOTONIC): one clock for the whole host
        self.health = 200
        self.release = threading.Event()  # what /slow waits for (set at teardown)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up on /slow (its timeout): the broken pipe is expected

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def count(self, path: str) -> int:
        return sum(1 for p, _ in self.hits if p == path)


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"  # keep-alive: the agent's pool reuses its connections

    def do_GET(self) -> None:
        self.server.hits.append((self.path, time.clock_gettime(time.CLOCK_MONOTONIC)))
        status = {"/ok": 200, "/fail": 500, "/missing": 404, "/busy": 429, "/health": self.server.health}
        if self.path == "/slow":
            self.server.release.wait(10)
        body = b"{}"
        self.send_response(status.get(self.path, 200))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


def config(url: str, extra: str = "", health: bool = False) -> str:
    env = f'env = {{ DEP_URL = "{url}"' + (', HEALTH = "1"' if health else "") + " }"
    return f"""
        [resilience.breaker]
        minimum_calls = 4
        failure_rate = 0.5
        open_for = 30.0
        {extra}
        [[supervisor.children]]
        name = "h"
        agent = "tests.agents_for_tests:HttpUser"
        working_dir = "{REPO}"
        {env}
    """


def get(daemon: DaemonProcess, dep: str, path: str, n: int = 1) -> list[Any]:
    return list(daemon.request("call", name="h", body={"dep": dep, "get": path, "n": n}, timeout=30)["reply"])


def state(daemon: DaemonProcess, name: str) -> str | None:
    done = ctl(daemon, "breakers", "--json")
    assert done.returncode == 0, done.stderr
    return next((b["state"] for b in json.loads(done.stdout)["breakers"] if b["name"] == name), None)


def test_5xx_answers_open_the_breaker_and_a_4xx_does_not(start_daemon, server: Server) -> None:
    daemon = start_daemon(config(server.url))
    assert get(daemon, "web", "/missing", 2) == [404] * 2  # answered: the dependency works
    assert get(daemon, "web", "/fail") == ["http_error"]
    assert state(daemon, "web") == "closed"  # 1 of 3: under minimum_calls
    assert get(daemon, "web", "/fail") == ["http_error"]  # 2 of 4: the failure rate reached
    assert state(daemon, "web") == "open"
    assert get(daemon, "web", "/ok", 3) == ["breaker_open"] * 3
    assert server.count("/ok") == 0  # refused in the agent, never sent
    assert get(daemon, "slow", "/busy") == ["http_error"]  # 429: shed load (another breaker)
    groups = json.loads(ctl(daemon, "errors", "--json").stdout)["groups"]
    assert sorted((g["category"], g["total"]) for g in groups if g["code"] == "http_error") == [
        ("infrastructure", 2), ("unavailable", 1)]


def test_timeouts_open_the_breaker(start_daemon, server: Server) -> None:
    daemon = start_daemon(config(server.url))
    assert get(daemon, "slow", "/ok", 2) == [200, 200]
    assert get(daemon, "slow", "/slow", 2) == ["timeout"] * 2  # 2 of 4: the failure rate reached
    assert state(daemon, "slow") == "open"
    assert get(daemon, "slow", "/ok") == ["breaker_open"]
    assert server.count("/ok") == 2


def test_a_failing_health_check_stops_the_request(start_daemon, server: Server) -> None:
    daemon = start_daemon(config(server.url, health=True))
    assert get(daemon, "web", "/ok") == [200]
    server.health = 503
    assert get(daemon, "web", "/ok", 2) == ["http_error"] * 2  # the check failed: /ok not asked
    assert server.count("/ok") == 1
    assert state(daemon, "web") == "open"


@pytest.mark.parametrize("lease", [0, 4])
def test_the_dependency_limit_spaces_the_requests(start_daemon, server: Server, lease: int) -> None:
    rate, burst, n, lease_for = 20.0, 2, 16, 0.1
    daemon = start_daemon(config(server.url, f"""
        [resilience.limits.api]
        rate = {rate}
        burst = {burst}
        lease = {lease}
        lease_for = {lease_for}
    """))
    began = time.monotonic()
    assert get(daemon, "limited", "/ok", n) == [200] * n
    assert time.monotonic() - began >= (n - burst - lease) / rate
    times = sorted(t for p, t in server.hits if p == "/ok")
    assert len(times) == n
    # arrival at the server, not the grant: allow a request 0.1 s of delay on the way (a loaded, shared machine)
    slack = 0.1 + (lease_for if lease else 0.0)
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            assert j - i + 1 <= burst + rate * (times[j] - start + slack) + 1e-9, (i, j)
    limit = json.loads(ctl(daemon, "limits", "--json").stdout)["limits"][0]
    if lease:
        assert limit["granted"] < n  # fewer round trips to the daemon than tokens
        assert limit["leased"] > 0
    else:
        assert limit["granted"] == n
        assert ctl(daemon, "breaker", "limited", "open").returncode == 0
        assert get(daemon, "limited", "/ok") == ["breaker_open"]
        after = json.loads(ctl(daemon, "limits", "--json").stdout)["limits"][0]
        assert after["granted"] == n  # no token spent on a call the breaker refused


def test_an_agent_under_the_harness_gets_its_http_client_too(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEP_URL", server.url)
    harness = AgentHarness(HttpUser)
    assert harness.call({"dep": "web", "get": "/ok", "n": 2}) == [200, 200]
    assert harness.call({"dep": "web", "get": "/fail"}) == ["http_error"]  # no daemon: every breaker stays closed
    assert server.count("/ok") == 2
    for dep in ("web", "slow", "limited"):
        harness.agent.http(dep).close()
