"""Issue 18's acceptance test: a 3-node NATS JetStream cluster on loopback (replicas 3, ``sync_interval: always``)
and two daemons with their own directories. Casts from a to ``counter@b`` are counted exactly once on b through a
SIGKILL of b's bridge, of the NATS server b's bridge is connected to, of daemon b (restarted on its state, while a
goes on sending), and of daemon a right after an accepted cast; then a workflow on a whose ``call`` step asks the
counter on b."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import ctl

from agents.testing import DaemonProcess, wait_for
from tests.nats_servers import NatsServers
from tests.test_cluster import cluster, count, nats_servers, status

pytestmark = pytest.mark.timeout(240)

WORKFLOWS = "[workflows]\ntask_agents = 1\nmonitor = false\n"


@pytest.fixture
def nats3(tmp_path: Path) -> Iterator[NatsServers]:
    yield from nats_servers(tmp_path, 3)


def test_cross_node_casts_exactly_once_through_kills_of_a_bridge_a_nats_server_and_daemons(
        nats3: NatsServers, start_daemon: Callable[[str], DaemonProcess], tmp_path: Path) -> None:
    a = start_daemon(cluster(nats3.urls, "a", replicas=3, extra=WORKFLOWS))
    b = start_daemon(cluster(nats3.urls[::-1], "b", replicas=3, counter=True))
    for d in (a, b):
        d.wait_running("bridge")
    b.wait_running("counter")
    total = 0
    for i in range(1, 91):
        a.request("send", name="counter@b", body={"add": i})
        total += i
        if i == 20:
            os.kill(b.pid("bridge") or 0, signal.SIGKILL)
        elif i == 40:  # the NATS server b's bridge reads from: it reconnects to another, a delivery may be lost
            server = wait_for(lambda: status(b)["server"], timeout=30, what="b's bridge connected")
            nats3.kill([u.rsplit(":", 1)[1] for u in nats3.urls].index(server.rsplit(":", 1)[1]))
        elif i == 60:  # daemon b and everything under it; a goes on accepting casts for b meanwhile
            b.kill()
            b.wait_exit()
        elif i == 75:
            b.start()
            a.kill()  # right after an accepted cast: it may not have left a's outbox yet
            a.wait_exit()
            a.start()
            a.wait_running("bridge")
    wait_for(lambda: count(b) >= total, timeout=90, what="every cross-node cast counted")
    assert count(b) == total

    definition = tmp_path / "ask.json"
    definition.write_text(json.dumps({"task": {"id": "ask", "action": "call", "timeout": 10,
                                               "args": {"agent": "counter@b", "msg": {"get": True}}}}))
    wait_for(lambda: "b" in {n["node"] for n in status(a)["nodes"]}, timeout=30, what="b's lease, seen from a")
    run = ctl(a, "workflow", "run", str(definition), "--id", "ask")
    assert run.returncode == 0, run.stderr
    waited = ctl(a, "workflow", "wait", "ask", "--timeout", "60")
    assert waited.returncode == 0, (waited.stdout, ctl(a, "workflow", "status", "ask").stdout)
    results = ctl(a, "workflow", "results", "ask")
    assert json.loads(results.stdout) == {"ask": {"count": total}}
    assert count(b) == total  # still: nothing came twice later
