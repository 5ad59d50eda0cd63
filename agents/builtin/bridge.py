"""The cluster bridge (DESIGN 3.10): agents on several daemons reach each other by name through NATS JetStream.

    casts   local sender ──NAME@node──> broker (durable) ──> bridge.handle_cast ──JetStream publish
              foundation.<node>.<NAME>, Nats-Msg-Id = <this node>:<our message id>──> publish ack ──> done
            JetStream ──push consumer bridge-<node> (foundation.<node>.>)──> NATS thread ──post──> bridge
              ──send_once(NAME@<this node>, mark=(stream seq, 0))──> broker (durable accept) ──> JetStream ack
    calls   local caller ──call NAME@node──> broker ──> bridge.handle_call: defer_reply ──NATS request
              foundation-call.<node>.<NAME>──> far bridge's NATS thread ──anonymous local call──> NAME
              <──reply (or error)── ; the NATS thread posts it, the bridge answers the deferred call
    registry  KV bucket foundation-nodes, one entry per node (TTL = the lease): its agents and their capabilities,
              renewed every RENEW s; the broker learns from it (routes) which bare names live on which node

* Outbound casts: the local message is done only after JetStream's publish ack. A crash before that brings the
  message again with the same id, and JetStream drops the resend within its duplicate window.
* Inbound casts, exactly once into the local broker: the broker drops a resend whose mark (the JetStream stream
  sequence) is not above the last it accepted from the bridge to that agent. That is only right if what the broker
  accepted is always a prefix, in stream order, of this node's messages; so the NATS thread watches the consumer's
  delivery sequence, and on a gap (a delivery lost in a reconnect) or at the start it *resyncs*: deletes and makes
  again the durable consumer, which then delivers everything not yet acknowledged, in stream order (the stream is a
  work queue: an acknowledged message is gone). What the broker had already accepted comes again and is dropped.
* Event-driven: the server pushes; the NATS thread wakes the agent's loop with ``post`` (an eventfd in its poll).
  The only timer is the lease's renewal (and a short retry while a local mailbox is full).

nats-py is asyncio; its loop runs in one thread of its own, and the agent's (synchronous) handlers hand work to it.
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
import zmq
import zmq.asyncio

from agents.sdk import Agent
from ipc import wire
from ipc.errors import ErrorCode, FoundationError

T = TypeVar("T")

STREAM = "FOUNDATION"
BUCKET = "foundation-nodes"
LEASE = 10.0  # seconds a node's registry entry lives without renewal
RENEW = 2.0  # how often the lease (and the agents it lists) is renewed
RETRY = 0.2  # how soon a delivery refused for now (a full mailbox) is tried again
IO_TIMEOUT = 5.0
CONNECT_TIMEOUT = 15.0
PUBLISH_PATIENCE = 20.0  # seconds of failed publishes before the bridge exits (and is restarted)
ACK_WAIT = 30.0  # a delivery not acknowledged by then comes again (a gap is found sooner: see resync)
MAX_ACK_PENDING = 1024  # deliveries in flight to this bridge at most
REJECTS_KEPT = 20
DROP = frozenset({ErrorCode.NO_SUCH_AGENT, ErrorCode.TOO_LARGE, ErrorCode.BAD_REQUEST})  # never accepted: reported


def subject(node: str, name: str) -> str:
    return f"foundation.{node}.{name}"


def split_target(to: str) -> tuple[str, str]:
    """``"NAME@node"`` -> (NAME, node); a FoundationError for anything else."""
    if not wire.REMOTE_TARGET.fullmatch(to):
        raise FoundationError(ErrorCode.BAD_REQUEST, f"a remote target is NAME@node, not {to!r}")
    name, _, node = to.partition("@")
    return name, node


def routes(registry: dict[str, dict[str, Any]], node: str) -> dict[str, str]:
    """Bare name -> the node that runs it, from the other nodes' current entries; a name on several nodes goes to
    the first in name order (``NAME@node`` chooses). The bridges themselves are never routed."""
    out: dict[str, str] = {}
    for other in sorted(registry):
        if other != node:
            for name in registry[other].get("agents", []):
                if name != "bridge":
                    out.setdefault(name, other)
    return out


def current(entries: dict[str, dict[str, Any]], now: float) -> dict[str, dict[str, Any]]:
    """The registry entries whose lease has not run out (the bucket's TTL removes them too, a little later)."""
    return {node: e for node, e in entries.items() if now - float(e.get("ts", 0)) <= float(e.get("lease", LEASE))}


class LocalClient:
    """An anonymous connection to the local broker from the NATS thread (zmq.asyncio): the far side of calls from
    other nodes, which must not wait on the bridge's own (synchronous) loop."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.asyncio.Context(io_threads=1)
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, wire.MAX_MESSAGE)
        self.sock.connect(endpoint)
        self.ref = 0
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.sock.send(wire.encode("hello", name=None, token=None))
        welcome = wire.decode(await asyncio.wait_for(self.sock.recv(), IO_TIMEOUT))
        if welcome["kind"] != "welcome":
            raise FoundationError(ErrorCode.UNAUTHORIZED, f"the local broker refused the bridge: {welcome}")
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            msg = wire.decode(await self.sock.recv())
            future = self.waiting.pop(msg.get("ref", -1), None)
            if future is not None and not future.done():
                future.set_result(msg)

    async def call(self, to: str, body: Any, timeout: float) -> dict[str, Any]:
        """``{"reply": ...}`` or ``{"error": {...}}``: the local callee's answer, as the broker gave it."""
        self.ref += 1
        ref, future = self.ref, asyncio.get_running_loop().create_future()
        self.waiting[ref] = future
        await self.sock.send(wire.encode("call", ref=ref, to=to, body=body, timeout=timeout))
        try:
            msg = await asyncio.wait_for(future, timeout + 1.0)
        except TimeoutError:
            return {"error": FoundationError(ErrorCode.TIMEOUT, f"no reply within {timeout}s").to_wire()}
        finally:
            self.waiting.pop(ref, None)
        return {"error": msg["error"]} if "error" in msg else {"reply": msg.get("body")}

    def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        self.sock.close(linger=0)
        self.ctx.term()


class Bridge(Agent):
    def init(self) -> dict[str, Any]:
        return {}

    def mount(self, state: Any) -> None:
        self.node = os.environ["FOUNDATION_CLUSTER_NODE"]
        self.servers = os.environ["FOUNDATION_CLUSTER_SERVERS"].split(",")
        self.replicas = int(os.environ.get("FOUNDATION_CLUSTER_REPLICAS", "3"))
        self.creds = os.environ.get("FOUNDATION_CLUSTER_CREDS")
        self.registry: dict[str, dict[str, Any]] = {}  # node -> its current entry (agents, services, lease)
        self.rejected: deque[dict[str, Any]] = deque(maxlen=REJECTS_KEPT)  # our casts the far side refused
        self.pending: deque[Any] = deque()  # delivered by JetStream, not yet accepted here (appended by the thread)
        self.woken = False
        self.retrying = False
        self.resyncs = 0
        self.inbound: Any = None
        self.generation = 0  # of the inbound consumer: deliveries of an older one are ignored
        self.expected = 1  # the next delivery sequence of the consumer
        self.resyncing: asyncio.Task[None] | None = None
        self.local: LocalClient | None = None
        self.serving: set[asyncio.Task[None]] = set()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="nats", daemon=True).start()
        self.nc: Any = None
        pause = 0.2
        self.busy(CONNECT_TIMEOUT + 10)  # the first attempt too may take long (servers down, no JetStream leader)
        while True:  # NATS (or its JetStream) not there yet: wait for it here, not in a tight restart loop
            try:
                self._run(self._connect(), timeout=CONNECT_TIMEOUT)
                break
            except Exception as exc:
                print(f"bridge: connecting to NATS JetStream at {','.join(self.servers)}: {exc!r}; trying again",
                      flush=True)
                self.busy(CONNECT_TIMEOUT + 10)
                time.sleep(pause)  # backoff between attempts at a link that is down, not a synchronisation
                pause = min(pause * 2, 5.0)
        self.busy(0)
        print(f"bridge: node {self.node} connected to {self.nc.connected_url.geturl()}", flush=True)
        self._renew()  # the broker learns this node's name before anything arrives for it
        self._run(self._subscribe())
        self.renew_ref = self.set_timer(RENEW, RENEW)

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = IO_TIMEOUT) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def _soon(self, coro: Coroutine[Any, Any, Any]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def _connect(self) -> None:
        import nats  # noqa: PLC0415 (only the bridge needs it)
        from nats.js.api import KeyValueConfig, RetentionPolicy, StorageType, StreamConfig  # noqa: PLC0415
        from nats.js.errors import NotFoundError  # noqa: PLC0415

        options: dict[str, Any] = {"servers": self.servers, "name": f"foundation-bridge-{self.node}",
                                   "max_reconnect_attempts": -1, "reconnect_time_wait": 0.5,
                                   "reconnected_cb": self._reconnected, "error_cb": self._link_error,
                                   "disconnected_cb": self._disconnected}
        if self.creds:
            options["user_credentials"] = self.creds
        if self.nc is None:
            self.nc = await nats.connect(**options)
        self.js = self.nc.jetstream()
        try:
            info = await self.js.stream_info(STREAM)
            if info.config.retention != RetentionPolicy.WORK_QUEUE:
                print(f"bridge: the stream {STREAM} is not a work queue (made by an older bridge?): acknowledged "
                      "messages stay, and each resync replays them (dropped as resends); make it again when idle",
                      flush=True)
        except NotFoundError:
            await self.js.add_stream(StreamConfig(name=STREAM, subjects=["foundation.>"], num_replicas=self.replicas,
                                                  storage=StorageType.FILE, duplicate_window=120.0,
                                                  retention=RetentionPolicy.WORK_QUEUE))
        try:
            self.kv = await self.js.key_value(BUCKET)
        except NotFoundError:  # BucketNotFoundError: the first bridge of the cluster makes it
            self.kv = await self.js.create_key_value(KeyValueConfig(bucket=BUCKET, ttl=LEASE, replicas=self.replicas,
                                                                    history=1))
        if self.local is None:
            self.local = LocalClient(os.environ["FOUNDATION_BROKER"])
            await self.local.start()

    async def _subscribe(self) -> None:
        await self.nc.subscribe(f"foundation-call.{self.node}.>", cb=self._on_call_request)
        await self.nc.subscribe(f"foundation-notice.{self.node}", cb=self._on_notice)
        await self._resync()

    # ---- outbound casts ----

    def handle_cast(self, msg: Any, state: Any) -> Any:
        if not (isinstance(msg, dict) and isinstance(msg.get("to"), str)):
            raise FoundationError(ErrorCode.BAD_REQUEST, 'the bridge carries {"to": "NAME@node", "body": ...}')
        name, node = split_target(msg["to"])
        msg_id = str(getattr(self._rt(), "message_id", None) or "")
        payload = orjson.dumps({"from": self.node, "body": msg.get("body"), "id": msg_id})
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
                if pause > 0.05:
                    self.busy(0)
                return
            except Exception as exc:
                if time.monotonic() >= deadline:
                    print(f"bridge: JetStream has not acked a publish for {PUBLISH_PATIENCE:g}s ({exc!r}); "
                          "exiting so that the message comes again", flush=True)
                    os._exit(70)
                if pause == 0.05:  # silent while it waits for the link: not a hang for the daemon's liveness
                    self.busy(PUBLISH_PATIENCE + IO_TIMEOUT)
                time.sleep(pause)  # backoff between attempts at a link that is down, not a synchronisation
                pause = min(pause * 2, 1.0)

    # ---- calls to other nodes (near side) ----

    def handle_call(self, msg: Any, state: Any) -> tuple[Any, Any]:
        op = msg.get("op") if isinstance(msg, dict) else msg
        if op == "status":
            return self._status(), state
        if op == "discover":
            return self._discover(msg.get("capability")), state
        if op != "call":
            raise FoundationError(ErrorCode.BAD_REQUEST, 'the bridge answers {"op": "status" | "discover" | "call"}')
        name, node = split_target(str(msg.get("to")))
        timeout = float(msg.get("timeout") or 5.0)
        runtime: Any = self._rt()
        handle = runtime.defer_reply()
        if node not in self.registry:  # answered at once, as a deferred answer: an expected outcome, no traceback
            runtime.reply(handle, error=FoundationError(
                ErrorCode.UNREACHABLE, f"node {node!r} has no current lease in the cluster registry (down, or not "
                "a node)", context={"node": node}))
        else:
            self._soon(self._remote_call(handle, name, node, msg.get("body"), max(0.05, timeout - 0.05)))
        return None, state

    async def _remote_call(self, handle: str, name: str, node: str, body: Any, timeout: float) -> None:
        from nats.errors import NoRespondersError  # noqa: PLC0415
        from nats.errors import TimeoutError as NatsTimeout  # noqa: PLC0415

        try:
            payload = orjson.dumps({"from": self.node, "body": body, "timeout": timeout})
            response = await self.nc.request(f"foundation-call.{node}.{name}", payload, timeout=timeout)
            answer = orjson.loads(response.data)
        except NoRespondersError:
            answer = {"error": FoundationError(ErrorCode.UNREACHABLE, f"no bridge answers on node {node!r} (its "
                                               "daemon or bridge is down)", context={"node": node}).to_wire()}
        except (TimeoutError, NatsTimeout):
            answer = {"error": FoundationError(ErrorCode.TIMEOUT, f"no reply from {name}@{node} within "
                                               f"{timeout:.2f}s").to_wire()}
        except Exception as exc:
            answer = {"error": FoundationError(ErrorCode.UNREACHABLE, f"calling {name}@{node}: {exc!r}").to_wire()}
        self._rt().post({"bridge_answer": handle, **answer})  # type: ignore[attr-defined]

    # ---- calls from other nodes (far side, all in the NATS thread) ----

    async def _on_call_request(self, msg: Any) -> None:
        task = asyncio.create_task(self._serve_call(msg))  # one slow callee does not hold up the next request
        self.serving.add(task)  # held until done: the loop keeps only weak references to tasks
        task.add_done_callback(self.serving.discard)

    async def _serve_call(self, msg: Any) -> None:
        name = msg.subject.split(".", 2)[2]
        try:
            request = orjson.loads(msg.data)
            assert self.local is not None
            answer = await self.local.call(f"{name}@{self.node}", request.get("body"), float(request["timeout"]))
        except Exception as exc:
            answer = {"error": FoundationError(ErrorCode.INTERNAL, f"bridge on {self.node}: {exc!r}").to_wire()}
        try:
            await msg.respond(orjson.dumps(answer))
        except Exception as exc:  # the caller's link is gone: it times out on its side
            print(f"bridge: answering a call to {name} from another node: {exc!r}", flush=True)

    # ---- inbound casts ----

    async def _resync(self) -> None:
        """Delete and make again the durable consumer: it then delivers, in stream order, every message for this
        node not yet acknowledged. Deliveries meanwhile are ignored (they come again)."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy  # noqa: PLC0415
        from nats.js.errors import NotFoundError  # noqa: PLC0415

        durable = f"bridge-{self.node}"
        pause = 0.1
        while True:
            generation = self.generation
            try:
                if self.inbound is not None:
                    sub, self.inbound = self.inbound, None
                    await sub.unsubscribe()
                try:
                    await self.js.delete_consumer(STREAM, durable)
                except NotFoundError:
                    pass
                self.expected = 1

                async def deliveries(msg: Any, generation: int = generation) -> None:
                    await self._on_inbound(msg, generation)

                self.inbound = await self.js.subscribe(
                    subject(self.node, ">"), stream=STREAM, durable=durable, manual_ack=True, cb=deliveries,
                    pending_msgs_limit=4 * MAX_ACK_PENDING,
                    config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                                          ack_wait=ACK_WAIT, max_ack_pending=MAX_ACK_PENDING))
                self.resyncs += 1
                if generation == self.generation:
                    return
            except Exception as exc:
                print(f"bridge: making the inbound consumer again: {exc!r}; trying again", flush=True)
                await asyncio.sleep(pause)  # the link is down: backoff until it is back
                pause = min(pause * 2, 2.0)

    def _resync_soon(self, why: str) -> None:
        """From now on the current consumer's deliveries are ignored; a new one delivers them again, in order."""
        print(f"bridge: resync of the inbound consumer ({why})", flush=True)
        self.generation += 1
        if self.resyncing is None or self.resyncing.done():
            self.resyncing = asyncio.create_task(self._resync())

    async def _reconnected(self) -> None:
        url = self.nc.connected_url
        print(f"bridge: reconnected to {url.geturl() if url else '?'}", flush=True)
        self._resync_soon("reconnected to NATS: a delivery may have been lost on the way")

    async def _disconnected(self) -> None:
        print("bridge: disconnected from NATS; reconnecting", flush=True)

    async def _link_error(self, exc: Exception) -> None:
        print(f"bridge: NATS: {exc!r}", flush=True)  # one line (nats-py's default prints a traceback)

    async def _on_inbound(self, msg: Any, generation: int) -> None:
        if generation != self.generation:
            return  # it comes again from the new consumer
        delivered = msg.metadata.sequence.consumer
        if delivered > self.expected:  # a delivery was lost: accepting this one first would break the prefix
            self._resync_soon(f"delivery {delivered}, expected {self.expected}")
            return
        self.expected = max(self.expected, delivered + 1)
        self.pending.append(msg)
        if not self.woken:
            self.woken = True
            self._rt().post({"bridge_inbound": True})  # type: ignore[attr-defined]

    def handle_info(self, info: Any, state: Any) -> Any:
        if not isinstance(info, dict):
            return state
        if "bridge_answer" in info:
            error = info.get("error")
            if isinstance(error, dict):
                err = FoundationError.from_wire(error, unknown=ErrorCode.HANDLER_ERROR)
                self._rt().reply(info["bridge_answer"], error=err)  # type: ignore[attr-defined]
            else:
                self._rt().reply(info["bridge_answer"], info.get("reply"))  # type: ignore[attr-defined]
        elif "bridge_inbound" in info:
            self._deliver()
        elif "tick" in info:
            if info["tick"] == self.renew_ref:
                self._renew()
            else:  # the retry after a full mailbox
                self.retrying = False
                self._deliver()
        return state

    def _deliver(self) -> None:
        """Deliver what JetStream pushed, in stream order. A delivery the broker refuses for now (a full mailbox)
        stays at the head, unacknowledged, and is tried again shortly before anything newer: the broker's mark for
        a (bridge, recipient) only ever rises past what it accepted, so a later message must not get in first."""
        self.woken = False
        while self.pending:
            m = self.pending[0]
            seq = m.metadata.sequence.stream
            name = m.subject.split(".", 2)[2]
            data = orjson.loads(m.data)
            try:
                self._send_once(f"{name}@{self.node}", data.get("body"), (seq, 0))
            except FoundationError as exc:
                if exc.code not in DROP:
                    if not self.retrying:
                        self.retrying = True
                        self.set_timer(RETRY)
                    return
                self._reject(data, name, seq, exc)
            self._soon(m.ack())
            self.pending.popleft()

    def _reject(self, data: dict[str, Any], name: str, seq: int, exc: FoundationError) -> None:
        """A cast this node can never accept (no such agent here): dropped, and said so to the node that sent it."""
        print(f"bridge: refusing {name} (stream seq {seq}) from {data.get('from')}: {exc}", flush=True)
        origin = data.get("from")
        if isinstance(origin, str) and origin and "." not in origin:
            notice = {"node": self.node, "to": f"{name}@{self.node}", "id": data.get("id"), "seq": seq,
                      "error": exc.to_wire(), "ts": time.time()}
            self._soon(self.nc.publish(f"foundation-notice.{origin}", orjson.dumps(notice)))

    async def _on_notice(self, msg: Any) -> None:
        notice = orjson.loads(msg.data)
        self.rejected.append(notice)
        print(f"bridge: node {notice.get('node')} refused our cast {notice.get('id')} to {notice.get('to')}: "
              f"{notice.get('error', {}).get('message')}", flush=True)

    def _send_once(self, to: str, body: Any, mark: tuple[int, int]) -> str:
        runtime = self._rt()
        send_once = getattr(runtime, "send_once", None)
        if send_once is None:  # the in-process harness: no broker marks to keep
            return runtime.send(to, body)
        return str(send_once(to, body, mark))

    # ---- the registry: this node's lease, its agents and their capabilities ----

    def _renew(self) -> None:
        """Read the registry, tell the broker which names live elsewhere (it answers with the agents connected
        here), then renew this node's entry with them."""
        try:
            self.registry = current(self._run(self._read_registry()), time.time())
        except Exception as exc:
            print(f"bridge: reading the cluster registry: {exc!r}", flush=True)
        runtime = self._rt()
        request = getattr(runtime, "request", None)
        agents: list[str] = []
        if request is not None:
            agents = request("routes", node=self.node, remote=routes(self.registry, self.node))["agents"]
        services = {s["name"]: s.get("offers", {}) for s in self._local_services()}
        entry = {"node": self.node, "ts": time.time(), "lease": LEASE, "agents": agents, "services": services}
        try:
            self._run(self.kv.put(self.node, orjson.dumps(entry)))
            self.registry[self.node] = entry
        except Exception as exc:
            print(f"bridge: renewing the lease: {exc!r}", flush=True)

    def _local_services(self) -> list[dict[str, Any]]:
        """The healthy agents here that registered capabilities (the host's service discovery, DESIGN 3.7)."""
        service = getattr(self._rt(), "service", None)
        try:
            return list(service("discovery.lookup", {})["services"]) if service is not None else []
        except FoundationError as exc:
            print(f"bridge: reading this host's services: {exc}", flush=True)
            return []

    async def _read_registry(self) -> dict[str, dict[str, Any]]:
        from nats.js.errors import NoKeysError, NotFoundError  # noqa: PLC0415

        try:
            keys = await self.kv.keys()
        except NoKeysError:
            return {}
        out = {}
        for key in keys:
            try:
                entry = await self.kv.get(key)
            except NotFoundError:  # KeyNotFoundError, KeyDeletedError
                continue  # expired between keys() and get()
            if entry.value:
                out[key] = orjson.loads(entry.value)
        return out

    def _discover(self, capability: Any) -> list[dict[str, Any]]:
        """The agents of every node with a current lease that offer ``capability`` (all registered ones without)."""
        out = []
        for node, entry in sorted(self.registry.items()):
            for name, caps in sorted(entry.get("services", {}).items()):
                if capability is None or capability in caps:
                    meta = caps.get(capability, {}) if capability is not None else caps
                    out.append({"name": f"{name}@{node}", "node": node, "agent": name, "capabilities": sorted(caps),
                                "meta": meta})
        return out

    # ---- foundationctl cluster status ----

    def _status(self) -> dict[str, Any]:
        from nats.errors import Error as NatsError  # noqa: PLC0415
        now = time.time()
        nodes = [{"node": node, "age": round(now - e["ts"], 3), "lease": e["lease"], "agents": e.get("agents", []),
                  "services": e.get("services", {})} for node, e in sorted(self.registry.items())]
        try:
            info = self._run(self.inbound.consumer_info()) if self.inbound is not None else None
        except (NatsError, TimeoutError):  # no server at the moment: the status says so (lag unknown)
            info = None
        url = self.nc.connected_url
        return {"node": self.node, "connected": self.nc.is_connected, "server": url.geturl() if url else None,
                "nodes": nodes, "lag": info.num_pending if info else None,
                "unacked": info.num_ack_pending if info else None, "waiting": len(self.pending),
                "resyncs": self.resyncs, "rejected": list(self.rejected)}

    def shutdown(self, state: Any) -> None:
        try:  # close, not drain: what is unacked comes again from JetStream
            self._run(self.nc.close(), timeout=2.0)
        except Exception as exc:
            print(f"bridge: closing the NATS connection: {exc!r}", flush=True)
        finally:
            if self.local is not None:
                self.loop.call_soon_threadsafe(self.local.close)
            self.loop.call_soon_threadsafe(self.loop.stop)
