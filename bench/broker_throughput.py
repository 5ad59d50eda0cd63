"""Durable cast throughput through the broker's own socket, against raw pyzmq DEALER/ROUTER as the ceiling.

    raw:    DEALER --frame--> ROUTER (another process) --ack--> DEALER          (no disk: the ceiling)
    broker: DEALER --cast--> foundationd (group commit, fsync) --accept--> DEALER
    agent:  the counter agent starts and handles the queued casts (state and last seq committed per batch)

The counter is stopped while the broker accepts, so the two measurements do not compete for the CPUs.

Each pattern keeps ``--window`` messages outstanding and reports messages per second and the p50/p99 time
from sending a message to its accept. Usage: .venv/bin/python bench/broker_throughput.py [--n 20000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import orjson
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.testing import DaemonProcess, wait_for
from ipc import wire

CONFIG = """
[supervisor]
[[supervisor.children]]
name = "counter"
agent = "agents.examples.counter:Counter"
mailbox = 1000000
"""


def _echo_router(endpoint: str, ready: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.SNDHWM, 0)  # a ROUTER drops at its high-water mark: the ceiling must not lose acks
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.bind(endpoint)
    ready.set()
    while True:
        ident, frame = sock.recv_multipart()
        if frame == b"stop":
            break
        msg = orjson.loads(frame)
        sock.send_multipart([ident, orjson.dumps({"kind": "accept", "ref": msg["ref"], "id": "x"})])
    sock.close(0)
    ctx.term()


def pump(sock: zmq.Socket, n: int, window: int, frame_for: callable) -> tuple[float, list[float]]:
    """Send n frames keeping ``window`` unanswered; returns (seconds, per-message accept latencies)."""
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    next_ref, answered = 1, 0
    start = time.perf_counter()
    while answered < n:
        while next_ref <= n and len(sent_at) < window:
            sent_at[next_ref] = time.perf_counter()
            sock.send(frame_for(next_ref))
            next_ref += 1
        reply = orjson.loads(sock.recv())
        if reply.get("kind") in ("accept", "reject") and reply.get("ref") in sent_at:
            latencies.append(time.perf_counter() - sent_at.pop(reply["ref"]))
            answered += 1
    return time.perf_counter() - start, latencies


def dealer_socket(ctx: zmq.Context) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    return sock


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def report(label: str, seconds: float, latencies: list[float], n: int) -> dict[str, float]:
    row = {"per_s": n / seconds, "p50_ms": pct(latencies, 0.5), "p99_ms": pct(latencies, 0.99)}
    print(f"{label:<44} {row['per_s']:>10,.0f} msg/s   accept p50 {row['p50_ms']:.2f} ms   p99 {row['p99_ms']:.2f} ms")
    return row


def cast_frame(ref: int) -> bytes:
    return wire.encode("cast", ref=ref, to="counter", body={"add": 1})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--window", type=int, default=200)
    args = parser.parse_args()
    print(f"{args.n} casts, window {args.window}; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="fb-tp-") as tmp:
        endpoint = f"ipc://{tmp}/raw.sock"
        ready = multiprocessing.Event()
        router = multiprocessing.Process(target=_echo_router, args=(endpoint, ready))
        router.start()
        ready.wait(10)
        ctx = zmq.Context()
        dealer = dealer_socket(ctx)
        dealer.connect(endpoint)
        raw = report("raw pyzmq DEALER/ROUTER (ceiling, no disk)", *pump(dealer, args.n, args.window, cast_frame),
                     args.n)
        dealer.send(b"stop")
        router.join(10)
        dealer.close(0)

        daemon = DaemonProcess(Path(tmp), CONFIG).start()
        try:
            daemon.wait_running("counter")
            sock = dealer_socket(ctx)
            sock.connect(f"ipc://{daemon.runtime_dir / wire.BROKER_SOCKET}")
            sock.send(wire.encode("hello", name=None, token=None))
            assert orjson.loads(sock.recv())["kind"] == "welcome"
            # Accepting alone: the counter is stopped, so no consumer competes for the two CPUs; its casts queue.
            daemon.request("stop", name="counter")
            broker = report("foundationd broker, durable (group commit)", *pump(sock, args.n, args.window,
                                                                                 cast_frame), args.n)
            t0 = time.perf_counter()
            daemon.request("start", name="counter")
            wait_for(lambda: daemon.request("call", name="counter", body={"get": True}, timeout=60)["reply"]
                     ["count"] == args.n, timeout=600, interval=0.05, what="the counter to handle every cast")
            handled = time.perf_counter() - t0
            print(f"{'counter agent: start, then handle the queue':<44} {args.n / handled:>10,.0f} msg/s")
            print(f"durable broker throughput is {100 * broker['per_s'] / raw['per_s']:.0f}% of the raw ceiling")
            sock.close(0)
        finally:
            daemon.stop()
        ctx.term()


if __name__ == "__main__":
    main()
