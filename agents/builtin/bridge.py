"""The cluster bridge (DESIGN 3.10): agents on several daemons reach each other by name through NATS JetStream.

    local agent ──cast NAME@node──> broker ──(rewritten)──> bridge.handle_cast({"to", "body"})
        ──JetStream publish foundation.<node>.<NAME>, Nats-Msg-Id = our message id──> publish ack ──> done
    JetStream ──durable pull consumer bridge-<node>, filter foundation.<node>.>──> bridge (on a tick)
        ──send_once(NAME, body, mark=(stream seq, 0))──> local broker accept ──> JetStream ack

Outbound: the local message is done (acked) only after JetStream's publish ack; a crash before that brings the
message again with the same id, and JetStream drops the resend within its duplicate window. Inbound: the local
broker drops a resend whose mark (the JetStream stream sequence, increasing for one consumer) is not above the
last one it accepted from the bridge to that agent, so a redelivery after a crash between the local accept and
the JetStream ack is not queued twice. The registry: a KV bucket ``foundation-nodes`` whose entries expire
(``ttl``), one per node, rewritten on every tick: a node whose lease is not renewed drops out.

nats-py is asyncio; its loop runs in one thread of its own, and the agent's (synchronous) handlers wait on it.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any, TypeVar

import orjson

from agents.sdk import Agent
from ipc.errors import ErrorCode, FoundationError

T = TypeVar("T")

STREAM = "FOUNDATION"
BUCKET = "foundation-nodes"
LEASE = 10.0  # seconds a node's registry entry lives without renewal
TICK = 0.1  # how often the inbound consumer is pulled
RENEW = 2.0  # how often the lease is renewed
IO_TIMEOUT = 5.0
PUBLISH_PATIENCE = 20.0  # seconds of failed publishes before the bridge exits (and is restarted)


def subject(node: str, name: str) -> str:
    return f"foundation.{node}.{name}"


def split_target(to: str) -> tuple[str, str]:
    """``"NAME@node"`` -> (NAME, node); a FoundationError for anything else."""
    name, at, node = to.partition("@")
    if not (at and name and node) or "." in node or "." in name:
        raise FoundationError(ErrorCode.BAD_REQUEST, f"a remote target is NAME@node, not {to!r}")
    return name, node


class Bridge(Agent):
    def init(self) -> dict[str, Any]:
        return {}

    def mount(self, state: Any) -> None:
        self.node = os.environ["FOUNDATION_CLUSTER_NODE"]
        self.servers = os.environ["FOUNDATION_CLUSTER_SERVERS"].split(",")
        self.replicas = int(os.environ.get("FOUNDATION_CLUSTER_REPLICAS", "3"))
        self.creds = os.environ.get("FOUNDATION_CLUSTER_CREDS")
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="nats", daemon=True).start()
        self._run(self._connect())
        self.renewed = 0.0
        self.pending: deque[Any] = deque()  # fetched from JetStream, not yet accepted here
        self.set_timer(TICK, TICK)

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = IO_TIMEOUT) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _connect(self) -> None:
        import nats  # noqa: PLC0415 (only the bridge needs it)
        from nats.js.api import ConsumerConfig, KeyValueConfig, StorageType, StreamConfig  # noqa: PLC0415
        from nats.js.errors import NotFoundError  # noqa: PLC0415

        options: dict[str, Any] = {"servers": self.servers, "name": f"foundation-bridge-{self.node}",
                                   "max_reconnect_attempts": -1}
        if self.creds:
            options["user_credentials"] = self.creds
        self.nc = await nats.connect(**options)
        self.js = self.nc.jetstream()
        try:
            await self.js.stream_info(STREAM)
        except NotFoundError:
            await self.js.add_stream(StreamConfig(name=STREAM, subjects=["foundation.>"], num_replicas=self.replicas,
                                                  storage=StorageType.FILE, duplicate_window=120.0))
        durable = f"bridge-{self.node}"  # ack_wait short: a fetch abandoned by a timed-out wait is redelivered soon
        self.sub = await self.js.pull_subscribe(subject(self.node, ">"), durable=durable, stream=STREAM,
                                                config=ConsumerConfig(ack_wait=5.0, max_ack_pending=1024))
        try:
            self.kv = await self.js.key_value(BUCKET)
        except Exception:
            self.kv = await self.js.create_key_value(KeyValueConfig(bucket=BUCKET, ttl=LEASE, replicas=self.replicas,
                                                                    history=1))

    # ---- outbound ----

    def handle_cast(self, msg: Any, state: Any) -> Any:
        if not (isinstance(msg, dict) and isinstance(msg.get("to"), str)):
            raise FoundationError(ErrorCode.BAD_REQUEST, 'the bridge carries {"to": "NAME@node", "body": ...}')
        name, node = split_target(msg["to"])
        msg_id = str(getattr(self._rt(), "message_id", None) or "")
        payload = orjson.dumps({"from": self.node, "body": msg.get("body")})
        headers = {"Nats-Msg-Id": f"{self.node}:{msg_id}"} if msg_id else None
        self._publish(subject(node, name), payload, headers)
        return state  # done (and acked here) only now that JetStream has acked the publish

    def _publish(self, subj: str, payload: bytes, headers: dict[str, str] | None) -> None:
        """Publish until JetStream acks. A handler that raised would count its message as handled (and lost), so
        a link that stays down for PUBLISH_PATIENCE ends the process instead: the supervisor starts the bridge
        again, the broker delivers the message again (same id), and JetStream drops it if it had got in."""
        deadline, pause = time.monotonic() + PUBLISH_PATIENCE, 0.05
        while True:
            try:
                self._run(self.js.publish(subj, payload, headers=headers, stream=STREAM))
                return
            except Exception as exc:
                if time.monotonic() >= deadline:
                    print(f"bridge: JetStream has not acked a publish for {PUBLISH_PATIENCE:g}s ({exc!r}); "
                          "exiting so that the message comes again", flush=True)
                    os._exit(70)
                time.sleep(pause)  # backoff between attempts at a link that is down, not a synchronisation
                pause = min(pause * 2, 1.0)

    # ---- inbound, and the lease ----

    def handle_info(self, info: Any, state: Any) -> Any:
        if isinstance(info, dict) and "tick" in info:
            self._pull()
            if time.monotonic() - self.renewed >= RENEW:
                self._renew()
        return state

    def _pull(self) -> None:
        """Deliver what JetStream holds for this node, in stream order. A delivery the broker refuses for now (a
        full mailbox: retryable) stays at the head, unacked, and is tried again on the next tick before anything
        newer is fetched: the broker's mark for a (bridge, recipient) only ever rises past what it accepted, so a
        later message must not get in first."""
        from nats.errors import TimeoutError as NatsTimeout  # noqa: PLC0415

        if not self.pending:
            try:
                self.pending.extend(self._run(self.sub.fetch(64, timeout=0.2)))
            except (TimeoutError, NatsTimeout):
                return
        while self.pending:
            m = self.pending[0]
            seq = m.metadata.sequence.stream
            name = m.subject.split(".", 2)[2]
            try:
                self._send_once(name, orjson.loads(m.data)["body"], (seq, 0))
            except FoundationError as exc:
                if exc.retryable:
                    return
                print(f"bridge: dropping {m.subject} seq {seq}: {exc}", flush=True)  # no such agent here
            self._run(m.ack_sync())
            self.pending.popleft()

    def _send_once(self, to: str, body: Any, mark: tuple[int, int]) -> str:
        runtime = self._rt()
        send_once = getattr(runtime, "send_once", None)
        if send_once is None:  # the in-process harness: no broker marks to keep
            return runtime.send(to, body)
        return str(send_once(to, body, mark))

    def _renew(self) -> None:
        entry = {"node": self.node, "ts": time.time(), "lease": LEASE}
        self._run(self.kv.put(self.node, orjson.dumps(entry)))
        self.renewed = time.monotonic()

    # ---- foundationctl cluster status ----

    def handle_call(self, msg: Any, state: Any) -> tuple[Any, Any]:
        if msg not in ({"op": "status"}, "status"):
            raise FoundationError(ErrorCode.BAD_REQUEST, 'the bridge answers {"op": "status"}')
        return self._run(self._status()), state

    async def _status(self) -> dict[str, Any]:
        nodes = []
        try:
            keys = await self.kv.keys()
        except Exception:
            keys = []
        now = time.time()
        for key in sorted(keys):
            entry = await self.kv.get(key)
            if entry.value:
                value = orjson.loads(entry.value)
                nodes.append({"node": key, "age": round(now - value["ts"], 3), "lease": value["lease"]})
        info = await self.sub.consumer_info()
        url = self.nc.connected_url
        return {"node": self.node, "connected": self.nc.is_connected, "server": url.geturl() if url else None,
                "nodes": nodes,
                "lag": info.num_pending, "unacked": info.num_ack_pending}

    def shutdown(self, state: Any) -> None:
        try:  # close, not drain: what is unacked comes again from JetStream; drain waits for a pending pull
            self._run(self.nc.close(), timeout=2.0)
        except Exception as exc:
            print(f"bridge: closing the NATS connection: {exc!r}", flush=True)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
