"""The process an SDK agent runs in: ``python -m agents.runtime package.module:Class``.

    foundationd ──spawn (env: name, one-time token, broker endpoint, state dir)──> runtime
    runtime: open LMDB state ─> state migrations (FOUNDATION_STATE_MIGRATIONS, ipc/state_migration.py: one commit)
        ─> init ─> DEALER connect ─> hello ─> mount ─> loop:
        deliveries that have arrived (a batch) ─> each: seq already handled? skip : handler ─> validate
        ─> one commit(state, last seq) ─> done[+reply] for each

The order inside the loop is the exactly-once argument: the state and the last handled ``seq`` commit in one
LMDB transaction (one per batch: the fsyncs are the whole cost of a commit), and no ``done`` leaves before
it. A crash before the commit loses the batch's effects and its messages come again; a crash after it makes
them come again with ``seq``s the state already covers, and they are skipped. Fork safety: the ZeroMQ
context and the LMDB environment are made here, after exec, never inherited.
"""

from __future__ import annotations

import ctypes
import logging
import os
import secrets
import signal
import sys
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Any

import orjson
import zmq

from agents.resilience import ResilienceClient
from agents.sdk import Agent, AgentLoadError, InvalidState, load_agent_class, validate_state
from agents.state import StateStore
from ipc import state_migration, wire
from ipc.errors import ErrorCode, FoundationError, classify, error_context, from_exception
from ipc.flags import FlagTable
from ipc.state_store import open_agent_store

log = logging.getLogger("agent")

REQUEST_TIMEOUT = 30.0  # how long a send waits for the daemon's accept
MAX_BATCH = 256  # messages handled per state commit at most
MAX_REPLY = wire.MAX_MESSAGE - 4096  # a reply's JSON; the rest is room for the frames that carry it to the caller
# Frames kept to send again after an in-place upgrade of foundationd (``resume``): those the old image had not read
# when it went (a heartbeat or two, one request, at most a window of dones in practice), with room to spare.
RESUME_FRAMES = 1024
RESUME_BYTES = 8 << 20


class Stop(Exception):
    """SIGTERM arrived while the runtime was waiting: leave the loop in order."""


class Connection:
    """A DEALER connected to the broker, with its context: made by the runtime, or ahead of time by a spare of the
    zygote (agents/zygote.py) so that the connection's handshake is done before the agent it becomes starts."""

    def __init__(self, endpoint: str, *, connect: bool = True) -> None:
        self.endpoint = endpoint
        self.ctx = zmq.Context(io_threads=1)
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.sock.setsockopt(zmq.MAXMSGSIZE, wire.MAX_MESSAGE)
        # A routing id of our own: after an in-place upgrade of foundationd the DEALER reconnects to the new image's
        # ROUTER under the same id, which the handed-over session knows (a generated one would be new).
        self.sock.setsockopt(zmq.ROUTING_ID, b"agent-" + secrets.token_hex(8).encode())
        self.connected = connect
        if connect:
            self.sock.connect(endpoint)

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


class AgentRuntime:
    def __init__(self, agent: Agent, name: str, endpoint: str, token: str | None, store: StateStore, *,
                 state_migrations: str | None = None, connection: Connection | None = None) -> None:
        self.agent = agent
        self._state_migrations = state_migrations  # the daemon's FOUNDATION_STATE_MIGRATIONS, if any
        self.name = name
        self._endpoint = endpoint
        self._token = token
        self._store = store
        if connection is not None and connection.endpoint != endpoint:
            connection.close()  # made for another broker socket: not ours
            connection = None
        if connection is None:  # connected in run(), once the state is loaded
            connection = Connection(endpoint, connect=False)
        self._connection = connection
        self._ctx, self._sock = connection.ctx, connection.sock
        self._sent = -1  # frames sent since hello (-1: before it), and the last of them, for ``resume``
        self._ring: deque[bytes] = deque()
        self._ring_bytes = 0
        self._inbox: deque[dict[str, Any]] = deque()  # deliveries that arrived while we waited for a reply
        self._ref = 0
        self._heartbeat = 1.0
        self._next_beat = 0.0
        self._cause: int | None = None
        self._sends_in_cause = 0
        self.message_id: str | None = None  # the id of the message being handled (the cluster bridge's Nats-Msg-Id)
        self._stopping = False
        self._waiting = False
        self.state: Any = None
        self.last_seq = 0
        self._persisted: bytes | None = None  # the state a handler committed itself (persist), this batch
        # post(): infos handed in by the agent's own threads, and the eventfd that wakes the one poll for them
        self._posted: deque[Any] = deque()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)
        self._poller.register(self._wake, zmq.POLLIN)
        self._deferring: str | None = None  # the call being handled whose reply comes later (defer_reply)
        self._answers: list[dict[str, Any]] = []  # deferred replies, sent after the batch's done frames
        self.resilience = ResilienceClient(self)  # breakers, limits, retries, discovery (agents/resilience.py)
        self.flags = FlagTable()  # the daemon's flags: in the welcome, then each change as an info (ipc/flags.py)
        agent._runtime = self

    # ---- lifecycle ----

    def run(self) -> int:
        state, self.last_seq = self._store.load()
        if self._state_migrations is not None:
            try:
                state = self._migrate_state(state, self._state_migrations)
            except Exception as exc:
                raise StartFailure(f"state migration failed: {_one_line(exc)}") from exc
        try:
            self.state = self.agent.init() if state is None else state
            validate_state(self.agent, self.state)
        except Exception as exc:
            raise StartFailure(f"{type(self.agent).__name__}.init() failed: {_one_line(exc)}") from exc
        if not self._connection.connected:
            self._sock.connect(self._endpoint)
            self._connection.connected = True
        try:
            self._hello()
            # After hello: mount may ask the daemon for things (set_timer, monitor, send); before it, a DEALER
            # with no connection blocks every send and the agent would hang forever.
            self.agent.mount(self.state)
            while not self._stopping:
                if self._inbox:
                    self._handle_batch()
                else:
                    self._wait_and_dispatch()
        except Stop:
            pass
        self.agent.shutdown(self.state)
        return 0

    def _migrate_state(self, state: Any, wanted: str) -> Any:
        """Bring the stored state to the migrations the daemon wants (forward, or back for a rollback), before
        anything is handled: one commit of the new state and the applied list, or nothing (an exception)."""
        applied = self._store.migrations()
        steps = state_migration.plan(applied, state_migration.parse_env(wanted))
        if not steps:
            return state
        new, done = state_migration.run(self.agent.init() if state is None else state, applied, steps)
        validate_state(self.agent, new)  # the code that runs now must accept what the migrations made
        self._store.commit(new, self.last_seq, migrations=done)
        for direction, migration in steps:
            log.info("state migration: %s %s (%s)", direction, migration["id"], migration[direction])
        return new

    def close(self) -> None:
        self._sock.close(linger=500)
        os.close(self._wake)
        self._ctx.term()
        self._store.close()

    def on_sigterm(self, signum: int, frame: object) -> None:
        self._stopping = True
        if self._waiting:
            raise Stop

    def _hello(self) -> None:
        self._send("hello", name=self.name, token=self._token, resume=True)
        self._sent = 0
        msg = self._receive_until(lambda m: m["kind"] in ("welcome", "error"), timeout=REQUEST_TIMEOUT)
        if msg is None or msg["kind"] == "error":
            detail = msg["error"] if msg else "no answer"
            raise SystemExit(f"agent {self.name}: the daemon refused hello: {detail}")
        self._heartbeat = float(msg["heartbeat"])
        self.flags.replace(msg.get("flags"))
        self._next_beat = time.monotonic() + self._heartbeat

    # ---- receiving ----

    def _wait_and_dispatch(self) -> None:
        frame = self._poll(max(0.0, self._next_beat - time.monotonic()))
        self._beat_if_due()
        while frame is not None:  # whatever has arrived already joins this batch
            self._dispatch(frame)
            if len(self._inbox) >= MAX_BATCH:
                return
            frame = self._receive_now()

    def _receive_now(self) -> dict[str, Any] | None:
        try:
            raw = self._sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return None
        try:
            return wire.decode(raw)
        except wire.WireError as err:
            log.warning("agent %s: bad frame from the daemon: %s", self.name, err)
            return None

    def _poll(self, timeout: float) -> dict[str, Any] | None:
        """One wait on the broker's socket and the post() wake-up; posted infos join the inbox as they arrive."""
        self._waiting = True
        try:
            if self._stopping:
                raise Stop
            ready = dict(self._poller.poll(int(timeout * 1000) + 1))
            if self._wake in ready:
                self._take_posted()
            if self._sock not in ready:
                return None
            raw = self._sock.recv(zmq.NOBLOCK)
        finally:
            self._waiting = False
        try:
            return wire.decode(raw)
        except wire.WireError as err:
            log.warning("agent %s: bad frame from the daemon: %s", self.name, err)
            return None

    def _take_posted(self) -> None:
        try:
            os.eventfd_read(self._wake)
        except BlockingIOError:
            pass
        while self._posted:  # local: no id the daemon knows, no seq, no done
            self._inbox.append({"kind": "deliver", "id": "", "seq": None, "sender": None,
                                "body": self._posted.popleft(), "call": False, "info": True, "local": True})

    def post(self, info: Any) -> None:
        """From any thread of the agent's process: ``handle_info(info)`` runs soon in the agent's own thread. Not
        durable (a wake-up from a thread of the agent's, e.g. the cluster bridge's NATS thread), never sent to
        the daemon."""
        self._posted.append(info)
        os.eventfd_write(self._wake, 1)

    def _beat_if_due(self) -> None:
        now = time.monotonic()
        if now >= self._next_beat:
            self._send("heartbeat")
            self._next_beat = now + self._heartbeat
            if self.resilience.pending:
                self.resilience.flush()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg["kind"]
        if kind == "deliver":
            self._inbox.append(msg)
        elif kind == "breaker":
            self.resilience.on_push(msg)
        elif kind == "resume":
            self._resume(int(msg["received"]))
        elif kind == "error":
            log.error("agent %s: daemon says: %s", self.name, msg["error"])

    def _receive_until(self, match: Any, timeout: float) -> dict[str, Any] | None:
        """Wait for the frame ``match`` accepts; deliveries meanwhile are kept, in order, for later."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            msg = self._poll(min(left, max(0.0, self._next_beat - time.monotonic())))
            self._beat_if_due()
            if msg is None:
                continue
            if match(msg):
                return msg
            if msg["kind"] in ("deliver", "breaker", "resume"):
                self._dispatch(msg)

    # ---- handling ----

    def _handle_batch(self) -> None:
        """Handle what has arrived (up to MAX_BATCH), commit once, then say done for each.

        One commit for the batch keeps exactly-once: the state and the last handled seq still change together,
        and no ``done`` leaves before they are on disk. A crash before the commit brings the whole batch again.
        """
        handled: list[tuple[dict[str, Any], dict[str, Any], Any]] = []
        last_seq, changed = self.last_seq, False
        while self._inbox and len(handled) < MAX_BATCH:
            msg = self._inbox.popleft()
            seq = msg["seq"]
            if seq is not None and seq <= last_seq:
                handled.append((msg, {}, None))  # handled before a crash: its effect is in the state already
                continue
            before = self.state
            fields, accepted = self._apply(msg, seq)
            changed = changed or seq is not None or self.state != before
            last_seq = seq if seq is not None else last_seq
            handled.append((msg, fields, accepted))
        if handled:
            ended = self.agent.end_batch(self.state)  # a failure here crashes us: the batch comes again
            if ended is not self.state:
                validate_state(self.agent, ended)
                self.state, changed = ended, True
        persisted = (self._persisted is not None and last_seq == self.last_seq
                     and orjson.dumps(self.state) == self._persisted)
        side = self.agent.take_side_states()
        if (changed and not persisted) or side:
            # A failing store crashes us: we come back to the last commit.
            self._store.commit(self.state, last_seq, side=side)
        self._persisted = None
        self.last_seq = last_seq
        for msg, fields, accepted in handled:
            if accepted is not None:
                self.agent.on_after_validate_state(accepted)
            if not msg.get("local"):
                self._send("done", id=msg["id"], **fields)
        self._send_answers()  # after the dones: a call deferred in this batch is known to the daemon as deferred
        if self.resilience.pending:
            self.resilience.flush()

    def _apply(self, msg: dict[str, Any], seq: int | None) -> tuple[dict[str, Any], Any]:
        """Run the handler; on success the new state becomes current. Returns (done fields, accepted state)."""
        self._cause, self._sends_in_cause, self.message_id = seq, 0, msg["id"]
        self._deferring = None
        try:
            with error_context(agent=self.name, message=msg["id"]):
                new_state, reply = self._run_handler(msg)
                check_outcome(self.agent, new_state, reply, call=msg["call"])
        except Exception as exc:
            return {"error": self._failed(msg, exc)}, None
        finally:
            self._cause = None
        self.state = new_state
        if msg["call"] and self._deferring == msg["id"]:
            return {"deferred": True}, new_state
        return ({"reply": reply} if msg["call"] else {}), new_state

    def _run_handler(self, msg: dict[str, Any]) -> tuple[Any, Any]:
        body = msg["body"]
        if msg["call"]:
            reply, state = self.agent.handle_call(body, self.state)
            return state, reply
        if msg["info"]:
            if self.flags.take(body):  # a new flag table: the runtime's, not the agent's
                return self.state, None
            return self.agent.handle_info(body, self.state), None
        return self.agent.handle_cast(body, self.state), None

    def _failed(self, msg: dict[str, Any], exc: Exception) -> dict[str, Any]:
        """The message failed; the old state stays, and the message still counts as handled (a redelivery would
        only fail again). Returns the structured error for its ``done``: the one error shape, with the handler's
        traceback (the caller's FoundationError gets it as ``traceback``) and the category of what it raised."""
        kind = "invalid state" if isinstance(exc, InvalidState) else "handler error"
        trace = traceback.format_exc()
        print(f"agent {self.name}: {kind} on {msg['id']}:\n{trace}", file=sys.stderr, flush=True)
        if isinstance(exc, FoundationError):
            err = exc
        else:
            shape = classify(exc)
            err = FoundationError(ErrorCode.HANDLER_ERROR, f"{type(exc).__name__}: {exc}", category=shape["category"],
                                  context={**shape["context"], "agent": self.name, "message": msg["id"],
                                           "exception": shape["code"]})
        err.traceback = err.traceback or trace[-4000:]
        return err.to_wire()

    # ---- the Runtime protocol (what Agent.send & co. call) ----

    def send(self, to: str, body: Any) -> str:
        extra: dict[str, Any] = {}
        if self._cause is not None:
            self._sends_in_cause += 1
            extra["chan"] = [self._cause, self._sends_in_cause]
        ref = self._next_ref()
        self._send("cast", ref=ref, to=to, body=body, **extra)
        answer = self._await_ref(ref, ("accept", "reject"), REQUEST_TIMEOUT)
        if answer["kind"] == "reject":
            raise FoundationError.from_wire(answer["error"])
        return answer["id"]

    def send_once(self, to: str, body: Any, mark: tuple[int, int]) -> str:
        """A cast whose resend the broker drops: ``mark`` increases per (this agent, ``to``), as a handler's sends
        do; the cluster bridge marks what it delivers with the JetStream sequence it came with."""
        ref = self._next_ref()
        self._send("cast", ref=ref, to=to, body=body, chan=list(mark))
        answer = self._await_ref(ref, ("accept", "reject"), REQUEST_TIMEOUT)
        if answer["kind"] == "reject":
            raise FoundationError.from_wire(answer["error"])
        return str(answer["id"])

    def call(self, to: str, body: Any, timeout: float) -> Any:
        ref = self._next_ref()
        self._send("call", ref=ref, to=to, body=body, timeout=timeout)
        answer = self._await_ref(ref, ("reply",), timeout + 1.0)
        if "error" in answer:
            raise FoundationError.from_wire(answer["error"])
        return answer.get("body")

    def defer_reply(self) -> str:
        """In ``handle_call``: this call is answered later, by ``reply(handle, ...)`` (OTP's ``{noreply, State}``
        and ``gen_server:reply``); what the handler returns as its reply is ignored. The caller still waits at most
        its timeout, and gets ``agent_down`` if this process dies first. Returns the handle."""
        if not self.message_id:
            raise FoundationError(ErrorCode.BAD_REQUEST, "defer_reply() belongs in handle_call")
        self._deferring = self.message_id
        return str(self.message_id)

    def reply(self, handle: str, body: Any = None, error: FoundationError | None = None) -> None:
        """Answer a deferred call (``defer_reply``) with ``body``, or with ``error``."""
        if error is None:
            _check_reply(body)
            self._answers.append({"id": handle, "reply": body})
        else:
            self._answers.append({"id": handle, "error": error.to_wire()})

    def _send_answers(self) -> None:
        answers, self._answers = self._answers, []
        for fields in answers:
            self._send("answer", **fields)

    def send_marked(self, casts: list[tuple[str, Any, list[int]]]) -> list[str | FoundationError]:
        """Casts with their marks (as ``send_once``), all sent before any accept is awaited: one round trip and one
        group commit of the daemon for the lot. Returns each one's message id, or its FoundationError."""
        refs = []
        for to, body, mark in casts:
            refs.append(self._next_ref())
            self._send("cast", ref=refs[-1], to=to, body=body, chan=list(mark))
        waiting = set(refs)
        answers: dict[int, dict[str, Any]] = {}

        def take(msg: dict[str, Any]) -> bool:
            if msg["kind"] in ("accept", "reject") and msg.get("ref") in waiting:
                answers[msg["ref"]] = msg
                waiting.discard(msg["ref"])
            return not waiting

        if waiting and self._receive_until(take, REQUEST_TIMEOUT) is None:
            raise FoundationError(ErrorCode.TIMEOUT, f"no answer from the daemon within {REQUEST_TIMEOUT}s")
        return [str(answers[ref]["id"]) if answers[ref]["kind"] == "accept"
                else FoundationError.from_wire(answers[ref]["error"]) for ref in refs]

    @property
    def cause(self) -> int | None:
        """The sequence number of the message being handled (None outside a handler, or for a call or a notice)."""
        return self._cause

    def monitor(self, target: str) -> int:
        ref = self._next_ref()
        self._send("monitor", ref=ref, target=target)
        answer = self._await_ref(ref, ("accept", "reject"), REQUEST_TIMEOUT)
        if answer["kind"] == "reject":
            raise FoundationError.from_wire(answer["error"])
        return ref

    def demonitor(self, ref: int) -> None:
        self._send("demonitor", ref=ref)

    def set_timer(self, after: float, every: float | None) -> int:
        ref = self._next_ref()
        self._send("timer", ref=ref, after=after, every=every)
        return ref

    def cancel_timer(self, ref: int) -> None:
        self._send("cancel_timer", ref=ref)

    def busy(self, seconds: float) -> None:
        self._send("heartbeat", busy=seconds)

    def persist(self, state: Any) -> None:
        validate_state(self.agent, state)
        self._store.commit(state, self.last_seq, side=self.agent.take_side_states())
        self._persisted = orjson.dumps(state)  # bytes: the handler may change the object after this

    def stop(self) -> None:
        self._stopping = True

    def load_side(self, name: str) -> Any:
        """The committed state of another name of this agent's shared environment (None if it has none)."""
        load_of = getattr(self._store, "load_of", None)
        return load_of(name)[0] if load_of is not None else None

    def _await_ref(self, ref: int, kinds: tuple[str, ...], timeout: float) -> dict[str, Any]:
        msg = self._receive_until(lambda m: m["kind"] in kinds and m.get("ref") == ref, timeout)
        if msg is None:
            raise FoundationError(ErrorCode.TIMEOUT, f"no answer from the daemon within {timeout}s")
        return msg

    def _next_ref(self) -> int:
        self._ref += 1
        return self._ref

    def _send(self, kind: str, **fields: Any) -> None:
        frame = wire.encode(kind, **fields)
        try:
            self._sock.send(frame)
        except zmq.ZMQError as exc:  # mapped at the boundary: the SDK raises the one error shape
            raise from_exception(exc, f"sending {kind} to foundationd") from exc
        if self._sent >= 0:
            self._sent += 1
            self._ring.append(frame)
            self._ring_bytes += len(frame)
            while len(self._ring) > RESUME_FRAMES or (self._ring_bytes > RESUME_BYTES and len(self._ring) > 1):
                self._ring_bytes -= len(self._ring.popleft())

    def _resume(self, received: int) -> None:
        """foundationd was upgraded in place (docs/upgrade.md): the new image has handled ``received`` of our frames
        and dropped the rest; say how many we sent, then send again, in order, those it has not handled. Nothing
        is lost (the old image answered all it read before it went) and nothing comes twice."""
        missing = self._sent - received
        if missing < 0 or missing > len(self._ring):
            raise SystemExit(f"agent {self.name}: cannot resume after foundationd's upgrade: it handled {received} "
                             f"of our frames, we sent {self._sent} and kept the last {len(self._ring)}")
        again = list(self._ring)[len(self._ring) - missing:]
        try:
            self._sock.send(wire.encode("resumed", sent=self._sent))
            for frame in again:
                self._sock.send(frame)
        except zmq.ZMQError as exc:
            raise from_exception(exc, "resuming with foundationd") from exc

    # ---- the resilience services' channel (agents/resilience.py) ----

    def service(self, op: str, args: dict[str, Any], timeout: float = REQUEST_TIMEOUT) -> Any:
        ref = self._next_ref()
        self._send("svc", ref=ref, op=op, args=args)
        answer = self._await_ref(ref, ("reply",), timeout)
        if "error" in answer:
            raise FoundationError.from_wire(answer["error"])
        return answer.get("body")

    def request(self, kind: str, **fields: Any) -> Any:
        """A frame of ``kind`` answered by ``reply {ref}`` (the cluster bridge's ``routes``); its body, or raises."""
        ref = self._next_ref()
        self._send(kind, ref=ref, **fields)
        answer = self._await_ref(ref, ("reply",), REQUEST_TIMEOUT)
        if "error" in answer:
            raise FoundationError.from_wire(answer["error"])
        return answer.get("body")

    def service_cast(self, op: str, args: dict[str, Any]) -> None:
        self._send("svc_cast", op=op, args=args)

    def pause(self, seconds: float) -> None:
        """Wait without missing heartbeats; deliveries that arrive meanwhile are kept for later."""
        self._receive_until(lambda m: False, timeout=seconds)

    def look(self) -> None:
        """Take in the frames that have arrived (pushed breaker changes, deliveries for later), without waiting."""
        if not self._sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            return
        frame = self._receive_now()
        while frame is not None:
            self._dispatch(frame)
            frame = self._receive_now()


def check_outcome(agent: Agent, state: Any, reply: Any, call: bool) -> None:
    """Raise what makes a handler's outcome fail its message: the one gate between a handler and a commit, shared
    with ``agents.testing.AgentHarness`` so that a unit test fails exactly where the runtime would."""
    validate_state(agent, state)
    _check_storable(state)
    if call:
        _check_reply(reply)


def _check_storable(state: Any) -> None:
    """A state the store could not hold fails its message now, not the whole batch at commit time."""
    if state is None:
        raise InvalidState("the handler returned None (a forgotten return?); return the new state")
    try:
        orjson.dumps(state)
    except TypeError as exc:
        raise InvalidState(f"the handler returned a state that cannot be stored: {exc}") from None


def _check_reply(reply: Any) -> None:
    """A reply that cannot travel fails its call now, with the reason, instead of failing the ``done`` frame (which
    would crash the agent after its commit, again at every redelivery)."""
    try:
        size = len(orjson.dumps(reply))
    except TypeError as exc:
        raise FoundationError(ErrorCode.HANDLER_ERROR, f"the reply cannot be encoded: {exc}") from None
    if size > MAX_REPLY:
        raise FoundationError(ErrorCode.TOO_LARGE, f"the reply is {size} bytes, the limit is {MAX_REPLY}")


PR_SET_PDEATHSIG = 1


def die_with_daemon() -> None:
    """SIGKILL when the daemon dies, as setpriv gives plain commands; and if it died before this was armed
    (the parent is no longer the daemon that spawned us), go at once: no agent outlives its daemon."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    expected = os.environ.get("FOUNDATION_DAEMON_PID")
    if expected and os.getppid() != int(expected):
        os._exit(1)


CAUSE_PREFIX = "foundation-agent: "  # the agent's last stderr line before a failed start; the daemon reports it


class StartFailure(Exception):
    """The agent could not start (load, instantiate, init); the message is the one-line cause."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _report_start_failure(what: str, exc: BaseException) -> int:
    """The user's frames (not the runtime's or importlib's), then one line naming the cause: the line the daemon
    shows in its log and in ``status``."""
    cause = exc.__cause__ if isinstance(exc, StartFailure) and exc.__cause__ is not None else exc
    if not isinstance(cause, AgentLoadError):
        here = os.path.dirname(os.path.abspath(__file__))
        frames = [f for f in traceback.extract_tb(cause.__traceback__)
                  if not f.filename.startswith((here, "<frozen importlib"))]
        if frames:
            print("Traceback (most recent call last):", file=sys.stderr)
            print("".join(traceback.format_list(frames)), end="", file=sys.stderr)
        print("".join(traceback.format_exception_only(cause)), end="", file=sys.stderr)
    print(f"{CAUSE_PREFIX}{what}", file=sys.stderr, flush=True)
    return 1


def main(argv: list[str] | None = None, connection: Connection | None = None) -> int:
    """``connection``: a spare's DEALER, already connected to the broker (used when the endpoint is this agent's)."""
    die_with_daemon()
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or ":" not in args[0]:
        print("usage: python -m agents.runtime package.module:Class", file=sys.stderr)
        return 2
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    env = os.environ
    name = env.get("FOUNDATION_NAME", "")
    endpoint = env.get("FOUNDATION_BROKER", "")
    if not name or not endpoint:
        print("agents.runtime: FOUNDATION_NAME and FOUNDATION_BROKER must be set (run me under foundationd)",
              file=sys.stderr)
        return 2
    try:
        agent = load_agent_class(args[0])()
    except AgentLoadError as exc:
        return _report_start_failure(f"cannot load {args[0]}: {exc}", exc)
    except Exception as exc:
        return _report_start_failure(f"cannot load {args[0]}: {_one_line(exc)}", exc)
    state_dir = Path(env.get("FOUNDATION_STATE_DIR", "."))
    store = open_agent_store(state_dir, name)
    runtime = AgentRuntime(agent, name, endpoint, env.get("FOUNDATION_AGENT_TOKEN"), store,
                           state_migrations=env.get(state_migration.ENV), connection=connection)
    signal.signal(signal.SIGTERM, runtime.on_sigterm)
    try:
        return runtime.run()
    except StartFailure as exc:
        return _report_start_failure(str(exc), exc)
    finally:
        runtime.close()


if __name__ == "__main__":
    raise SystemExit(main())
