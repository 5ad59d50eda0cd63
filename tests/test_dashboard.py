"""The dashboard and what issue 13 left after events, history, metrics and doctor (DESIGN 3.9), against real daemons:
``[dashboard] listen`` is validated; the page, its snapshot and its server-sent events are served from the daemon's
loop; a real headless chromium shows a SIGKILLed child's restart without a reload; an idle daemon with the dashboard
on (and even with a page open) does not wake up; workflow steps are events and metrics; ``doctor`` sees a stale LMDB
reader left by a SIGKILLed process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import browser
import pytest
from helpers import SLEEP, ctl, wake_ups_in_a_second
from prometheus_client.parser import text_string_to_metric_families

from agents.testing import DaemonProcess, wait_for
from daemon.config import ConfigError, parse_config
from daemon.services.dashboard import allowed_host
from ipc.state_store import agent_state_path

DASHBOARD = """
    [dashboard]
    listen = "127.0.0.1:0"
"""
TICKER = f"""
    [[supervisor.children]]
    name = "ticker"
    command = {SLEEP}
"""


def address(daemon: DaemonProcess) -> str:
    return str(daemon.status()["daemon"]["dashboard"])


def get(daemon: DaemonProcess, path: str) -> tuple[str, bytes]:
    with urllib.request.urlopen(f"http://{address(daemon)}{path}", timeout=10) as response:
        assert response.status == 200
        return response.headers["Content-Type"], response.read()


class SseClient:
    """A raw server-sent-events reader: one (event, data) at a time, each read with a deadline."""

    def __init__(self, daemon: DaemonProcess) -> None:
        host, port = address(daemon).rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.sock.sendall(f"GET /stream HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        self.buffer = b""
        head = self._until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK"), head
        assert b"Content-Type: text/event-stream" in head

    def _until(self, end: bytes) -> bytes:
        while end not in self.buffer:
            data = self.sock.recv(65536)
            assert data, "the stream ended"
            self.buffer += data
        out, self.buffer = self.buffer.split(end, 1)
        return out

    def next(self) -> tuple[str, Any]:
        fields = dict(line.split(": ", 1) for line in self._until(b"\n\n").decode().splitlines())
        return fields["event"], json.loads(fields["data"])

    def close(self) -> None:
        self.sock.close()


def section(sections: list[dict[str, Any]], name: str) -> Any:
    return next(s for s in sections if s["name"] == name)


def find(tree: dict[str, Any], name: str) -> dict[str, Any]:
    if tree["name"] == name:
        return tree
    return next(found for child in tree.get("children", []) if (found := find(child, name)) is not None)


# ---- config ----


@pytest.mark.parametrize(("text", "message"), [
    ('[dashboard]\nlisten = "localhost:9465"', "dashboard.listen: 'localhost' is not an IP address"),
    ('[dashboard]\nlisten = "127.0.0.1"', "dashboard.listen: expected HOST:PORT"),
    ("[dashboard]\n", 'dashboard.listen: missing: the address to serve the dashboard on, e.g. "127.0.0.1:9465"'),
    ('[dashboard]\nlisten = "127.0.0.1:9465"\nport = 1', "dashboard.port: unknown key"),
])
def test_the_dashboard_table_is_checked_like_metrics(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(text, "x.toml")
    assert message in str(error.value)


def test_the_dashboard_is_off_unless_configured_and_takes_an_ipv6_address() -> None:
    assert parse_config("", "x.toml").dashboard_listen is None
    assert parse_config('[dashboard]\nlisten = "[::1]:9465"', "x.toml").dashboard_listen == "[::1]:9465"


def test_only_an_address_or_localhost_may_name_the_dashboard() -> None:
    assert all(map(allowed_host, ["127.0.0.1:9465", "localhost:9465", "[::1]:9465", "localhost", "10.0.0.1"]))
    assert not any(map(allowed_host, ["evil.example:9465", "", "127.0.0.1.nip.io:9465"]))


# ---- served from the daemon ----


def test_the_page_the_snapshot_and_the_stream_show_a_restart(start_daemon) -> None:
    daemon = start_daemon(DASHBOARD + TICKER)
    first = daemon.wait_running("ticker")
    kind, page = get(daemon, "/")
    assert kind == "text/html; charset=utf-8"
    assert b"EventSource" in page
    for external in (b"http://", b"https://", b"src=", b"href=", b"@import"):  # no asset from anywhere
        assert external not in page, external
    kind, raw = get(daemon, "/snapshot.json")
    assert kind == "application/json"
    snapshot = json.loads(raw)
    names = [s["name"] for s in snapshot["sections"]]
    assert names[:2] == ["daemon", "tree"]
    assert {"messaging", "workflows", "flags", "stage", "breakers", "alerts"} <= set(names)
    assert section(snapshot["sections"], "flags")["data"] is None
    assert "no circuit breaker" in section(snapshot["sections"], "breakers")["placeholder"]
    assert find(section(snapshot["sections"], "tree")["data"], "ticker")["pid"] == first
    assert section(snapshot["sections"], "messaging")["data"]["counters"]["accepted"] == 0

    request = urllib.request.Request(f"http://{address(daemon)}/", headers={"Host": "rebound.example:9465"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403
    refused.value.close()

    stream = SseClient(daemon)
    try:
        kind, first_message = stream.next()
        assert kind == "snapshot"
        assert find(section(first_message["sections"], "tree")["data"], "ticker")["pid"] == first
        os.kill(first, signal.SIGKILL)
        second = daemon.wait_running("ticker", not_pid=first)
        seen: list[dict[str, Any]] = []
        tree: dict[str, Any] = {}
        while not (tree and find(tree, "ticker")["pid"] == second and "child_started" in [e["type"] for e in seen]):
            kind, update = stream.next()
            assert kind == "update"
            seen += update["events"]
            tree = update["sections"].get("tree", tree)
        assert [e["type"] for e in seen if e.get("name") == "ticker"] == ["child_exited", "child_restarted",
                                                                          "child_started"]
        assert find(tree, "ticker")["restarts"] == 1
    finally:
        stream.close()


def test_an_idle_daemon_with_the_dashboard_on_does_not_wake_up_even_with_a_page_open(start_daemon) -> None:
    daemon = start_daemon(DASHBOARD + TICKER)
    daemon.wait_running("ticker")
    get(daemon, "/snapshot.json")  # the server works; then nobody connects
    assert daemon.proc is not None
    assert wake_ups_in_a_second(daemon.proc.pid) <= 1
    stream = SseClient(daemon)
    try:
        assert stream.next()[0] == "snapshot"
        assert wake_ups_in_a_second(daemon.proc.pid) <= 1  # a page open, nothing happening: no timer, no keep-alive
    finally:
        stream.close()


# ---- in a real browser ----


@pytest.mark.skipif(not browser.available(), reason="no chromium at /usr/bin/chromium (.ci/run installs Debian's "
                    "chromium; locally: apt-get install -y chromium)")
def test_a_headless_chromium_shows_a_killed_childs_restart_without_a_reload(start_daemon) -> None:
    daemon = start_daemon(DASHBOARD + TICKER)
    first = daemon.wait_running("ticker")
    cell = "document.querySelector('[data-child=\"ticker\"] [data-field=\"{}\"]')?.textContent"
    with browser.Browser() as chromium:
        page = chromium.open(f"http://{address(daemon)}/")
        wait_for(lambda: page.evaluate(cell.format("pid")) == str(first), timeout=20, what="the page showing ticker")
        assert page.evaluate(cell.format("state")) == "running"
        assert page.evaluate("document.getElementById('conn').textContent") == "live"
        assert page.evaluate("document.querySelector('#s-breakers .placeholder').textContent").startswith("no circuit")
        os.kill(first, signal.SIGKILL)
        second = daemon.wait_running("ticker", not_pid=first)
        wait_for(lambda: page.evaluate(cell.format("pid")) == str(second), timeout=20, what="the new pid shown")
        assert page.evaluate(cell.format("restarts")) == "1"
        shown = page.evaluate("[...document.querySelectorAll('#events-rows tr[data-name=\"ticker\"]')]"
                              ".map(r => r.dataset.type)")
        assert shown[:3] == ["child_started", "child_restarted", "child_exited"]  # newest first
        assert page.evaluate("document.body.dataset.snapshots") == "1"  # no reload, no reconnect: pushed
        assert int(page.evaluate("document.body.dataset.updates")) >= 1


# ---- workflow steps ----


def test_workflow_runs_and_command_steps_are_events_and_metrics(start_daemon, tmp_path: Path) -> None:
    daemon = start_daemon("""
        [metrics]
        listen = "127.0.0.1:0"
        [supervisor]
        intensity = 100
        period = 1
        [workflows]
        task_agents = 1
        monitor = false
    """)
    definition = {"sequential": [
        {"task": {"id": "hello", "action": "command", "args": {"command": ["sh", "-c", "echo '{\"n\": 1}'"]}}},
        {"task": {"id": "fails", "action": "command", "args": {"command": ["sh", "-c", "exit 3"]}}},
    ]}
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(definition))
    assert ctl(daemon, "workflow", "run", str(path), "--id", "obs").returncode == 0
    assert ctl(daemon, "workflow", "wait", "obs", "--timeout", "30").returncode == 1  # its second step failed

    done = ctl(daemon, "events", "--type", "workflow_step", "--json")
    steps = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["phase"] for e in steps].count("run") == 1  # (said once the run is on disk: its steps may be first)
    assert [(e["phase"], e["step"], e.get("outcome")) for e in steps if e["phase"] != "run"] == [
        ("started", "hello", None), ("ended", "hello", "ok"), ("started", "fails", None),
        ("ended", "fails", "exit_status")]
    assert all(e["workflow"] == "obs" for e in steps)
    assert steps[2]["kind"] == "command"
    assert steps[2]["seconds"] >= 0

    with urllib.request.urlopen(f"http://{daemon.status()['daemon']['metrics']}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("foundation_workflow_runs_total", ())] == 1
    assert samples[("foundation_workflow_steps_started_total", ())] == 2
    assert samples[("foundation_workflow_steps_finished_total", (("outcome", "ok"),))] == 1
    assert samples[("foundation_workflow_steps_finished_total", (("outcome", "exit_status"),))] == 1


# ---- doctor ----

READER = """
import sys, lmdb
env = lmdb.open(sys.argv[1], readonly=True, lock=True, subdir=True, max_dbs=8)
txn = env.begin()  # a read transaction: a slot in the reader table with this pid
print("reading", flush=True)
sys.stdin.read()
"""


def test_doctor_fails_on_a_stale_lmdb_reader_left_by_a_sigkilled_process(start_daemon) -> None:
    daemon = start_daemon("""
        [[supervisor.children]]
        name = "counter"
        agent = "agents.examples.counter:Counter"
    """)
    daemon.wait_running("counter")
    assert ctl(daemon, "send", "counter", '{"add": 1}').returncode == 0
    env = agent_state_path(daemon.state_dir, "counter")
    wait_for((env / "data.mdb").exists, what="the counter's environment")
    assert ctl(daemon, "doctor", "--window", "0").returncode == 0

    reader = subprocess.Popen([sys.executable, "-c", READER, str(env)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert reader.stdout is not None
    assert reader.stdout.readline() == "reading\n"
    reader.kill()  # SIGKILL inside its read transaction: nothing releases its slot
    reader.communicate(timeout=10)

    found = ctl(daemon, "doctor", "--window", "0", "--json")
    assert found.returncode == 1, found.stdout
    failing = {c["name"]: c["detail"] for c in json.loads(found.stdout)["checks"] if not c["ok"]}
    assert list(failing) == ["stale readers"]
    assert failing["stale readers"] == f"agents/counter: pid {reader.pid}"


# ---- messaging latency ----


def test_accept_and_handling_latency_and_the_outbox_are_in_the_metrics(start_daemon) -> None:
    daemon = start_daemon("""
        [metrics]
        listen = "127.0.0.1:0"
        [[supervisor.children]]
        name = "counter"
        agent = "agents.examples.counter:Counter"
    """)
    daemon.wait_running("counter")
    for _ in range(3):
        assert ctl(daemon, "send", "counter", '{"add": 1}').returncode == 0
    assert ctl(daemon, "call", "counter", '{"get": true}').returncode == 0  # answered after the casts: all handled

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(f"http://{daemon.status()['daemon']['metrics']}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    samples = wait_for(lambda: (m := scrape())[("foundation_broker_handling_latency_seconds_count", ())] >= 4 and m,
                       what="four messages handled")
    assert samples[("foundation_broker_accept_latency_seconds_count", ())] == 4
    assert samples[("foundation_broker_accept_latency_seconds_bucket", (("le", "+Inf"),))] == 4
    assert 0 < samples[("foundation_broker_accept_latency_seconds_sum", ())] < 10
    assert samples[("foundation_broker_handling_latency_seconds_sum", ())] < 10
    assert samples[("foundation_broker_outbox_messages", ())] == 0
    assert samples[("foundation_broker_outbox_oldest_age_seconds", ())] == 0


def test_the_page_shows_the_flags_of_the_config(start_daemon) -> None:
    daemon = start_daemon(DASHBOARD + """
        [flags]
        checkout = "on"
        search = 30
    """ + TICKER)
    flags = section(json.loads(get(daemon, "/snapshot.json")[1])["sections"], "flags")["data"]
    assert [f["name"] for f in flags] == ["checkout", "search"]
    assert section(json.loads(get(daemon, "/snapshot.json")[1])["sections"], "stage")["data"] is None
