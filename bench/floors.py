"""Physical floors, measured in the same run as the supervisors: what the machine allows for each scenario.

Each returns seconds (lists of samples, or one figure); bench/compare.py turns them into the Floor column.
The echo servers run in their own processes (as a daemon would), started and stopped here however we leave.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import lmdb
import zmq

from agents.state import StateStore
from bench.anchors import SLEEP, SLEEP_ARGV

TRUE = "/bin/true"
SDK_IMPORT = "import zmq, lmdb, orjson, agents.runtime, agents.examples.counter"


def fork_exec_true(runs: int, warmup: int = 3) -> list[float]:
    """fork + exec + exit + wait of /bin/true with subprocess.run (what a Python supervisor pays at least)."""
    times = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        subprocess.run([TRUE], check=True)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def posix_spawn_true(runs: int, warmup: int = 3) -> list[float]:
    """The same through os.posix_spawn (vfork + exec in glibc) and waitpid: the cheapest start from Python."""
    times = []
    env = {"PATH": os.environ.get("PATH", os.defpath)}
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        pid = os.posix_spawn(TRUE, [TRUE], env)
        os.waitpid(pid, 0)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def spawn_and_stop_sleepers(n: int) -> tuple[float, float]:
    """posix_spawn ``n`` sleeps (each returns once exec'd), then SIGTERM all and wait all: (start s, stop s)."""
    env = {"PATH": os.environ.get("PATH", os.defpath)}
    pids: list[int] = []
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            pids.append(os.posix_spawn(SLEEP, SLEEP_ARGV, env))
        started = time.perf_counter() - t0
        t1 = time.perf_counter()
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        for pid in pids:
            os.waitpid(pid, 0)
        stopped = time.perf_counter() - t1
        pids = []
        return started, stopped
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def python_sdk_start(runs: int) -> list[float]:
    """Start this interpreter importing the agent SDK (zmq, lmdb, runtime), run to exit: an agent start's floor."""
    times = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", SDK_IMPORT], check=True)
        if i:
            times.append(time.perf_counter() - t0)
    return times


def python_sdk_start_parallel(n: int) -> float:
    """``n`` of those at once, until the last has exited (the floor for a cold start of ``n`` agents)."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", SDK_IMPORT]) for _ in range(n)]
    try:
        for p in procs:
            p.wait()
        return time.perf_counter() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@contextlib.contextmanager
def _server(code: str, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("echo server did not start")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


UNIX_ECHO = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind(sys.argv[1]); s.listen(1)
print("ready", flush=True)
c, _ = s.accept(); buf = b""
while True:
    d = c.recv(65536)
    if not d: break
    buf += d
    while b"\\n" in buf:
        line, _, buf = buf.partition(b"\\n")
        c.sendall(line + b"\\n")
"""


def unix_echo_rtt(runs: int, warmup: int = 10) -> list[float]:
    """One JSON-lines request/reply over a Unix stream socket to another Python process: the control floor."""
    with tempfile.TemporaryDirectory(prefix="fb-floor-") as tmp:
        path = str(Path(tmp) / "echo.sock")
        with _server(UNIX_ECHO, path):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            try:
                line = b'{"id": 1, "verb": "status", "args": {}}\n'
                times = []
                for i in range(warmup + runs):
                    t0 = time.perf_counter()
                    s.sendall(line)
                    got = b""
                    while not got.endswith(b"\n"):
                        got += s.recv(65536)
                    if i >= warmup:
                        times.append(time.perf_counter() - t0)
                return times
            finally:
                s.close()


ZMQ_ECHO = """
import sys, zmq
ctx = zmq.Context(); s = ctx.socket(zmq.ROUTER); s.bind(sys.argv[1])
print("ready", flush=True)
while True:
    s.send_multipart(s.recv_multipart())
"""


def zmq_rtt(runs: int, warmup: int = 20) -> list[float]:
    """pyzmq DEALER -> ROUTER (echo, another process) -> DEALER over ipc://, one message in flight."""
    with tempfile.TemporaryDirectory(prefix="fb-floor-") as tmp:
        endpoint = f"ipc://{tmp}/echo.zmq"
        with _server(ZMQ_ECHO, endpoint):
            ctx = zmq.Context()
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(endpoint)
            try:
                payload = b'{"t": "call", "to": "counter", "body": {"get": true}}'
                times = []
                for i in range(warmup + runs):
                    t0 = time.perf_counter()
                    s.send(payload)
                    s.recv()
                    if i >= warmup:
                        times.append(time.perf_counter() - t0)
                return times
            finally:
                s.close()
                ctx.term()


def lmdb_commit(runs: int, size: int = 1024, base: str | None = None, warmup: int = 10) -> list[float]:
    """One write transaction of ``size`` bytes, durable on return (the state store's sync + metasync flags)."""
    with tempfile.TemporaryDirectory(prefix="fb-floor-lmdb-", dir=base) as tmp:
        flags = dict(StateStore._OPEN_FLAGS)  # private on purpose: the same environment flags as an agent's store
        env = lmdb.open(tmp, map_size=16 << 20, **flags)
        try:
            value = os.urandom(size)
            times = []
            for i in range(warmup + runs):
                t0 = time.perf_counter()
                with env.begin(write=True) as txn:
                    txn.put(b"state", value)
                    txn.put(b"seq", i.to_bytes(8, "big"))
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
            return times
        finally:
            env.close()


ZYGOTE = """
import os, signal, sys
import lmdb, orjson, zmq
import agents.examples.counter, agents.runtime
from agents.state import StateStore
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
endpoint, base = sys.argv[1], sys.argv[2]
for i in range(10):  # a restarted agent reopens the store it had: make them first
    StateStore(os.path.join(base, str(i))).close()
print("ready", flush=True)
n = 0
for line in sys.stdin:
    n += 1
    if os.fork() == 0:
        store = StateStore(os.path.join(base, str(n % 10)))
        store.load()
        ctx = zmq.Context(io_threads=1)
        s = ctx.socket(zmq.DEALER)
        s.connect(endpoint)
        s.send(b"hello")
        s.recv()
        os._exit(0)
"""


def zygote_start(runs: int, parallel: int = 1) -> list[float]:
    """An agent start from a preloaded fork server (the SDK imported, no ZeroMQ context yet): fork, open an
    existing LMDB store and load it, make a context, connect a DEALER and say hello; time until the hello is here.

    With ``parallel`` > 1 each sample is the time until ``parallel`` children asked at once have all said hello.
    """
    with tempfile.TemporaryDirectory(prefix="fb-floor-zygote-") as tmp:
        endpoint = f"ipc://{tmp}/hello.zmq"
        ctx = zmq.Context()
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.bind(endpoint)
        proc = subprocess.Popen([sys.executable, "-c", ZYGOTE, endpoint, tmp], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE)
        try:
            assert proc.stdin is not None
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != b"ready":
                raise RuntimeError("zygote did not start")
            times = []
            for i in range(runs + 1):
                t0 = time.perf_counter()
                proc.stdin.write(b"go\n" * parallel)
                proc.stdin.flush()
                for _ in range(parallel):
                    if not router.poll(10_000):
                        raise TimeoutError("no hello from the zygote's child")
                    ident, _ = router.recv_multipart()
                    router.send_multipart([ident, b"welcome"])
                if i:
                    times.append(time.perf_counter() - t0)
                time.sleep(0.01)
            return times
        finally:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            router.close()
            ctx.term()
