"""Cross-node latency and throughput through the cluster bridge, on one machine (docs/scaling.md).

    python -m bench.cluster_latency [N]

One nats-server (JetStream, sync_interval: always) on loopback, two foundationd (nodes a and b), a counter on b.
Latency: one cast ``counter@b`` from a's control socket until b's counter shows it (polled over b's socket, so the
figure includes that poll), N times; throughput: N casts back to back until the last is counted.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agents.testing import DaemonProcess, wait_for
from tests.test_cluster import NATS_SERVER, cluster, count, free_port, reachable


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        port = free_port()
        conf = base / "nats.conf"
        conf.write_text(f'listen: "127.0.0.1:{port}"\n'
                        f'jetstream {{ store_dir: "{base / "js"}", sync_interval: always }}\n')
        server = subprocess.Popen([str(NATS_SERVER), "-c", str(conf)], stderr=subprocess.DEVNULL)
        daemons: list[DaemonProcess] = []
        try:
            wait_for(lambda: reachable(port), what="nats-server")
            url = f"nats://127.0.0.1:{port}"
            a = DaemonProcess(base, cluster(url, "a", counter=False), name="a").start()
            b = DaemonProcess(base, cluster(url, "b", counter=True), name="b").start()
            daemons += [a, b]
            a.wait_running("bridge")
            b.wait_running("bridge")
            b.wait_running("counter")
            wait_for(lambda: a.request("cluster", op="status")["cluster"]["nodes"], what="a lease")
            latencies = []
            for i in range(1, n + 1):
                start = time.perf_counter()
                a.request("send", name="counter@b", body={"add": 1})
                wait_for(lambda i=i: count(b) >= i, interval=0.0005, what="counted")  # type: ignore[misc]
                latencies.append(time.perf_counter() - start)
            start = time.perf_counter()
            for _ in range(n):
                a.request("send", name="counter@b", body={"add": 1})
            wait_for(lambda: count(b) >= 2 * n, timeout=60, interval=0.001, what="all counted")
            elapsed = time.perf_counter() - start
            ms = sorted(x * 1000 for x in latencies)
            print(f"cross-node cast, accept on a to counted on b: p50 {statistics.median(ms):.1f} ms, "
                  f"p99 {ms[int(len(ms) * 0.99) - 1]:.1f} ms ({n} casts)")
            print(f"throughput: {n} casts in {elapsed:.2f} s = {n / elapsed:.0f}/s (one sender, one at a time)")
        finally:
            for d in daemons:
                d.stop()
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
