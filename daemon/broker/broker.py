"""The message broker: a ZeroMQ ROUTER on the daemon's loop, with a durable outbox and acknowledgements.

    sender ──cast──> validate ──> staged ──(end of loop turn: one LMDB txn, fsync)──> accept ──> sender
                                                │
                                                └──> mailbox ──deliver (window)──> recipient
    recipient ──done──> mailbox.done ──> delete in next txn; a call's reply goes back to its caller

* Accepted means on disk: a cast's ``accept`` is sent only after the transaction holding it committed,
  and it is delivered only then, so a recipient never acts on a message the daemon could still lose.
* Order: one mailbox per recipient, first in first out; calls and ticks queue behind earlier casts.
* Exactly-once effect: each cast carries its mailbox ``seq``; the agent commits its state together with
  the last seq it handled and skips anything at or below it when a message comes again after a crash.
  A cast sent by an agent while handling message ``cause`` carries ``chan = [cause, index]``; the broker
  remembers the last mark per sender and recipient, so the same send replayed after the sender crashed
  is recognised and not queued twice.
* Identity: the daemon gives each incarnation of an agent a one-time token in its environment; a hello
  with a wrong or used token is refused, so nobody can take over an agent's traffic.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import lmdb
import zmq

from daemon.broker.mailbox import Entry, Mailbox
from daemon.broker.outbox import Batch, Outbox, outbox_path
from daemon.shell.loop import EventLoop, TimerHandle
from daemon.shell.socket_path import check_socket, check_startup_socket
from ipc import wire
from ipc.errors import ErrorCode, FoundationError

log = logging.getLogger("foundationd.broker")

MIN_TICK = 0.01  # seconds: the shortest period of an agent's periodic timer

Respond = Callable[[Any, FoundationError | None], None]  # (result, error): exactly one is set


@dataclass
class Session:
    identity: bytes
    name: str | None  # None: an anonymous client (no mailbox, may cast and call)
    last_seen: float = 0.0


@dataclass
class Staged:
    recipient: str
    entry: Entry
    respond: Respond | None


@dataclass
class AgentInfo:
    """What the broker keeps about one agent name while it is in the tree."""

    token: str | None = None
    session: Session | None = None
    timers: dict[int, TimerHandle] = field(default_factory=dict)
    ticking: set[int] = field(default_factory=set)  # timer refs with a tick in the mailbox, not yet done


class Broker:
    def __init__(
        self,
        runtime_dir: Path,
        state_dir: Path,
        loop: EventLoop,
        *,
        agent_alive: Callable[[str], bool | None],
        kill: Callable[[str, str], None],
        mailbox_bound: Callable[[str], int],
        heartbeat: float = 1.0,
        liveness: Callable[[str], float] = lambda name: 10.0,
        on_hello: Callable[[str], None] = lambda name: None,
        window: int = 64,
    ) -> None:
        """``agent_alive(name)``: None if no agent of that name is in the tree, else whether it runs."""
        self._loop = loop
        self._agent_alive = agent_alive
        self._kill = kill
        self._bound = mailbox_bound
        self.heartbeat = heartbeat
        self.liveness = liveness
        self._on_hello = on_hello
        self.window = window
        self.endpoint = f"ipc://{runtime_dir / wire.BROKER_SOCKET}"
        self._socket_path = runtime_dir / wire.BROKER_SOCKET
        check_startup_socket(self._socket_path)
        self._outbox = Outbox(outbox_path(state_dir))
        self._ctx = zmq.Context(io_threads=1)
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, wire.MAX_MESSAGE)
        self._sock.setsockopt(zmq.SNDHWM, 0)  # deliveries are bounded by the window, accepts by requests
        self._sock.setsockopt(zmq.RCVHWM, 100_000)
        old_umask = os.umask(0o177)
        try:
            self._sock.bind(self.endpoint)
        finally:
            os.umask(old_umask)
        self._user_sockets: dict[int, tuple[str, Path]] = {}  # uid -> endpoint, path (agents with user=)
        self._sessions: dict[bytes, Session] = {}
        self._agents: dict[str, AgentInfo] = {}
        self._boxes: dict[str, Mailbox] = {}
        self._staged: list[Staged] = []
        self._staged_count: dict[str, int] = {}
        self._after_flush: list[Callable[[], None]] = []
        self._gaps: dict[tuple[str, str], list[int]] = {}  # an external producer's first refused number
        self._batch = Batch()
        self._flush_scheduled = False
        self._next_seq: dict[str, int] = {}
        self._chans: dict[tuple[str, str], list[Any]] = {}
        self._calls: dict[str, TimerHandle] = {}  # call id -> its timeout
        self._call_counter = 0
        self._monitors: dict[tuple[str, int], str] = {}  # (watcher, ref) -> target; each agent numbers its refs
        self._heartbeat_timer: TimerHandle | None = None
        self._recover()
        self._fd = self._sock.getsockopt(zmq.FD)
        loop.add_reader(self._fd, self._on_readable)

    # ---- lifecycle ----

    def _recover(self) -> None:
        stored, seqs, chans = self._outbox.load()
        self._next_seq.update(seqs)
        self._chans.update(chans)
        for item in stored:
            record = item.record
            entry = Entry(record["id"], item.seq, record.get("from"), record.get("body"))
            self._box(item.recipient).push(entry)
            self._next_seq[item.recipient] = max(self._next_seq.get(item.recipient, 1), item.seq + 1)
        if stored:
            log.info("recovered %d undelivered message(s) from the outbox", len(stored))

    def close(self) -> None:
        if self._batch or self._staged:
            self._flush()
        self._loop.remove_reader(self._fd)
        self._sock.close(linger=0)
        self._ctx.term()
        self._outbox.close()
        for path in [self._socket_path, *(path for _, path in self._user_sockets.values())]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    # ---- hooks for the daemon ----

    def endpoint_for(self, uid: int, gid: int) -> str:
        """The endpoint an agent running as ``uid`` connects to: the same ROUTER, bound once more on a socket only
        that user (and root) may connect to, ``broker-UID.sock`` in the root-owned runtime directory.

        Nothing more is exposed than that user already has: whoever runs as the agent's user can read its
        token from its memory and send as it. Hellos still need the token; ``send``-ing anonymously from there
        is what the agent itself may do.
        """
        if uid == os.geteuid():
            return self.endpoint
        known = self._user_sockets.get(uid)
        if known is not None:
            return known[0]
        path = self._socket_path.with_name(f"broker-{uid}.sock")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by a SIGKILLed daemon
        endpoint = f"ipc://{path}"
        check_socket(path)
        old_umask = os.umask(0o177)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise OSError(exc.errno, f"cannot bind {endpoint}: {exc}") from exc
        finally:
            os.umask(old_umask)
        os.chown(path, uid, gid, follow_symlinks=False)
        self._user_sockets[uid] = (endpoint, path)
        return endpoint

    def expect(self, name: str) -> str:
        """A new incarnation of agent ``name`` is about to start: the token only it may say hello with."""
        info = self._agents.setdefault(name, AgentInfo())
        self._disconnect(name)
        info.token = secrets.token_hex(16)
        return info.token

    def agent_exited(self, name: str, reason: str) -> None:
        """The agent's process is gone: unfinished casts wait for the next incarnation; calls fail."""
        info = self._agents.get(name)
        if info is None:
            return
        info.token = None
        self._disconnect(name)
        for handle in info.timers.values():
            handle.cancel()
        info.timers.clear()
        info.ticking.clear()
        box = self._boxes.get(name)
        if box is not None:  # ticks and down notices were for this incarnation's refs: the next one has its own
            box.queue = deque(e for e in box.queue if e.kind != "info")
        for (watcher, ref), target in list(self._monitors.items()):
            if watcher == name:
                del self._monitors[(watcher, ref)]
            elif target == name:
                del self._monitors[(watcher, ref)]
                self._stage_info(watcher, {"down": {"ref": ref, "target": name, "reason": reason}})

    def forget(self, name: str) -> None:
        """The agent left the tree: its undone messages are dropped (and logged)."""
        self.agent_exited(name, "detached")
        self._agents.pop(name, None)
        box = self._boxes.pop(name, None)
        if box is not None:
            for entry in box.drain():
                self._fail_call(entry, ErrorCode.AGENT_DOWN, f"{name} was detached")
        dropped = self._outbox.drop_recipient(name)
        if dropped:
            log.warning("dropped %d undelivered message(s) to detached agent %s", dropped, name)

    def stats(self) -> dict[str, Any]:
        return {
            "monitors": len(self._monitors),
            "pending_calls": len(self._calls),
            "mailboxes": {name: len(box) for name, box in self._boxes.items() if len(box)},
            "connected": sorted(n for n, i in self._agents.items() if i.session is not None),
        }

    # ---- the control socket's entry points (anonymous sender) ----

    def send(self, to: str, body: Any, respond: Respond, producer: str | None = None, seq: int | None = None) -> None:
        """A cast from outside the tree. With ``producer`` and ``seq`` (increasing per producer) a resend
        after a lost answer is recognised and answered with the first id instead of being queued twice."""
        if producer is not None and seq is not None:
            self._cast(f"ctl:{producer}", to, body, [seq, 0], respond, gapless=True)
        else:
            self._cast(None, to, body, None, respond)

    def call(self, to: str, body: Any, timeout: float, respond: Respond) -> None:
        self._call(None, to, body, timeout, respond)

    # ---- frames ----

    def _on_readable(self) -> None:
        handled = 0
        while self._sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                break
            if len(frames) == 2:
                self._on_frame(frames[0], frames[1])
            elif len(frames) > 2:  # a peer's multipart message: one JSON frame per message is the protocol
                self._send(frames[0], "error", error=wire.error_body(
                    ErrorCode.BAD_REQUEST, f"a message is one frame, not {len(frames) - 1}"))
            handled += 1
            if handled >= 20_000:  # let other descriptors have a turn; come back at the end of it
                self._loop.call_soon(self._on_readable)
                break

    def _on_frame(self, identity: bytes, frame: bytes) -> None:
        try:
            msg = wire.decode(frame)
        except wire.WireError as err:
            self._send(identity, "error", error=err.to_wire())
            return
        session = self._sessions.get(identity)
        kind = msg["kind"]
        if kind == "hello":
            self._hello(identity, msg)
            return
        if session is None:
            self._send(identity, "error", error=wire.error_body(ErrorCode.UNAUTHORIZED, "say hello first"))
            return
        session.last_seen = self._loop.clock()
        handler = self._HANDLERS.get(kind)
        if handler is None:
            self._send(identity, "error", error=wire.error_body(ErrorCode.BAD_REQUEST, f"{kind} is not for the broker"))
            return
        try:
            handler(self, session, msg)
        except Exception as exc:  # a frame that passed validation but trips a bug: answer it, keep the daemon
            log.exception("broker: %s frame from %r failed", kind, session.name)
            self._send(identity, "error", error=wire.error_body(ErrorCode.INTERNAL, repr(exc)))

    def _hello(self, identity: bytes, msg: dict[str, Any]) -> None:
        name, token = msg["name"], msg["token"]
        if name is None:
            self._sessions[identity] = Session(identity, None, self._loop.clock())
            self._send(identity, "welcome", name=None, heartbeat=self.heartbeat)
            return
        info = self._agents.get(name)
        if info is None or info.token is None or not secrets.compare_digest(info.token, token or ""):
            log.warning("refused hello as %r: wrong or used token", name)
            self._send(identity, "error", error=wire.error_body(ErrorCode.UNAUTHORIZED, f"bad token for {name!r}"))
            return
        info.token = None  # one hello per incarnation
        session = Session(identity, name, self._loop.clock())
        self._sessions[identity] = session
        info.session = session
        self._send(identity, "welcome", name=name, heartbeat=self.heartbeat)
        box = self._box(name)
        box.reset()  # anything in flight to an earlier connection goes again, in order
        self._pump(name)
        self._arm_heartbeat_check()
        self._on_hello(name)  # the agent is ready: its supervisor may start the next sibling

    def _on_cast(self, session: Session, msg: dict[str, Any]) -> None:
        chan = msg.get("chan")
        if not (isinstance(chan, list) and len(chan) == 2 and all(isinstance(x, int) for x in chan)):
            chan = None
        self._cast(session.name, msg["to"], msg["body"], chan, self._responder(session.identity, msg["ref"]))

    def _on_call(self, session: Session, msg: dict[str, Any]) -> None:
        ref = msg["ref"]
        identity = session.identity

        def respond(result: Any, err: FoundationError | None) -> None:
            if err is not None:
                self._send(identity, "reply", ref=ref, error=err.to_wire())
            else:
                self._send(identity, "reply", ref=ref, body=result)

        self._call(session.name, msg["to"], msg["body"], float(msg["timeout"]), respond)

    def _on_done(self, session: Session, msg: dict[str, Any]) -> None:
        if session.name is None:
            return
        box = self._boxes.get(session.name)
        entry = box.done(msg["id"]) if box is not None else None
        if entry is None:
            return  # stale: an earlier incarnation's delivery, already requeued
        if entry.persisted:
            self._batch.deletes.append((session.name, entry.seq))  # type: ignore[arg-type]
            self._schedule_flush()
        if entry.kind == "call":
            self._finish_call(entry, msg)
        elif entry.kind == "info" and isinstance(entry.body, dict) and "tick" in entry.body:
            info = self._agents.get(session.name)
            if info is not None:
                info.ticking.discard(entry.body["tick"])
        self._pump(session.name)

    def _on_heartbeat(self, session: Session, msg: dict[str, Any]) -> None:
        pass  # last_seen was updated for every frame

    def _on_monitor(self, session: Session, msg: dict[str, Any]) -> None:
        ref, target = msg["ref"], msg["target"]
        if session.name is None:
            self._send(session.identity, "reject", ref=ref,
                       error=wire.error_body(ErrorCode.BAD_REQUEST, "only agents may monitor"))
            return
        self._send(session.identity, "accept", ref=ref, id=f"monitor/{ref}")
        if self._agent_alive(target):
            self._monitors[(session.name, ref)] = target
        else:
            self._stage_info(session.name, {"down": {"ref": ref, "target": target, "reason": "noproc"}})

    def _on_demonitor(self, session: Session, msg: dict[str, Any]) -> None:
        if session.name is not None:
            self._monitors.pop((session.name, msg["ref"]), None)

    def _on_timer(self, session: Session, msg: dict[str, Any]) -> None:
        if session.name is None:  # ticks go to an agent's mailbox: an anonymous client has none
            self._send(session.identity, "reject", ref=msg["ref"],
                       error=wire.error_body(ErrorCode.BAD_REQUEST, "only agents may set timers"))
            return
        info = self._agents.setdefault(session.name, AgentInfo())
        ref, after, every = msg["ref"], float(msg["after"]), msg["every"]
        if every is not None and every > 0:
            every = max(MIN_TICK, float(every))  # a periodic timer of a nanosecond would spin the loop
        name = session.name

        def fire() -> None:
            info.timers.pop(ref, None)
            if ref not in info.ticking:  # a slow agent gets one tick, not a growing pile of them
                info.ticking.add(ref)
                self._stage_info(name, {"tick": ref})
            if every is not None and every > 0:
                info.timers[ref] = self._loop.call_later(float(every), fire)

        old = info.timers.pop(ref, None)
        if old is not None:
            old.cancel()
        info.timers[ref] = self._loop.call_later(max(0.0, after), fire)

    def _on_cancel_timer(self, session: Session, msg: dict[str, Any]) -> None:
        info = self._agents.get(session.name or "")
        handle = info.timers.pop(msg["ref"], None) if info else None
        if handle is not None:
            handle.cancel()

    _HANDLERS: ClassVar[dict[str, Callable[[Broker, Session, dict[str, Any]], None]]] = {
        "cast": _on_cast,
        "call": _on_call,
        "done": _on_done,
        "heartbeat": _on_heartbeat,
        "monitor": _on_monitor,
        "demonitor": _on_demonitor,
        "timer": _on_timer,
        "cancel_timer": _on_cancel_timer,
    }

    # ---- accepting ----

    def _admit(self, to: str) -> Mailbox:
        """The recipient's mailbox, if a message may be added to it now; else a structured error."""
        if self._agent_alive(to) is None:
            raise FoundationError(ErrorCode.NO_SUCH_AGENT, f"no agent named {to!r}")
        box = self._box(to)
        if len(box) + self._staged_count.get(to, 0) >= box.bound:
            raise FoundationError(ErrorCode.MAILBOX_FULL, f"mailbox of {to!r} is full ({box.bound} messages)")
        return box

    def _cast(
        self, sender: str | None, to: str, body: Any, chan: list[int] | None, respond: Respond, *, gapless: bool = False
    ) -> None:
        """Accept one cast. ``gapless`` (external producers): after a refusal, later numbers of the same producer
        are refused too until the refused one is sent again, so a resend from the gap loses nothing."""
        # A resend of an accepted cast is answered as such before the mailbox's bound is looked at: it adds nothing.
        if chan is not None and sender is not None and self._agent_alive(to) is not None:
            mark = self._chans.get((sender, to))
            if mark is not None and chan <= mark[:2]:
                # Answer only after this turn's commit: the first copy may still be staged, not yet on disk.
                first = mark[2] if chan == mark[:2] else "duplicate"
                self._after_flush.append(lambda: respond(first, None))
                self._schedule_flush()
                return
        key = (sender or "", to)
        gap = self._gaps.get(key) if gapless else None
        if gap is not None and chan is not None and chan > gap:
            respond(None, FoundationError(ErrorCode.MAILBOX_FULL,
                                          f"message {gap[0]} of this producer was refused; send again from there"))
            return
        try:
            self._admit(to)
            seq = self._next_seq.get(to, 1)
            entry = Entry(f"{to}/{seq}", seq, sender, body)
            self._fits(entry)
        except FoundationError as err:
            if gapless and chan is not None and (gap is None or chan < gap):
                self._gaps[key] = chan
            respond(None, err)
            return
        if gap is not None and chan == gap:
            del self._gaps[key]
        self._batch.undo_seqs.setdefault(to, self._next_seq.get(to))
        self._next_seq[to] = seq + 1
        self._batch.puts.append((to, seq, {"id": entry.id, "from": sender, "body": body}))
        self._batch.seqs[to] = seq + 1
        if chan is not None and sender is not None:
            self._batch.undo_chans.setdefault((sender, to), self._chans.get((sender, to)))
            self._chans[(sender, to)] = self._batch.chans[(sender, to)] = [*chan, entry.id]
        self._stage(to, entry, respond)

    def _call(self, sender: str | None, to: str, body: Any, timeout: float, respond: Respond) -> None:
        self._call_counter += 1
        entry = Entry(f"{to}/call-{self._call_counter}", None, sender, body, kind="call", caller=respond)
        try:
            self._admit(to)
            self._fits(entry)
        except FoundationError as err:
            respond(None, err)
            return
        self._calls[entry.id] = self._loop.call_later(timeout, lambda: self._expire_call(entry, timeout))
        self._stage(to, entry, None)

    @staticmethod
    def _fits(entry: Entry) -> None:
        """Raise unless the frame that will deliver ``entry`` is within the size limit: once accepted, a message
        that can never be delivered would stay in flight forever."""
        wire.encode("deliver", id=entry.id, seq=entry.seq, sender=entry.sender, body=entry.body,
                    call=entry.kind == "call", info=entry.kind == "info")

    def _stage_info(self, to: str, body: Any) -> None:
        self._call_counter += 1
        self._stage(to, Entry(f"{to}/info-{self._call_counter}", None, None, body, kind="info"), None)

    def _stage(self, to: str, entry: Entry, respond: Respond | None) -> None:
        self._staged.append(Staged(to, entry, respond))
        self._staged_count[to] = self._staged_count.get(to, 0) + 1
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Group commit: one durable transaction for the turn, then accepts and deliveries."""
        self._flush_scheduled = False
        batch, staged, after = self._batch, self._staged, self._after_flush
        self._batch, self._staged, self._staged_count, self._after_flush = Batch(), [], {}, []
        if batch:
            try:
                self._outbox.commit(batch)
            except lmdb.Error as exc:
                log.exception("outbox commit failed")
                self._undo(batch)
                err = FoundationError(ErrorCode.INTERNAL, f"could not persist the message: {exc}")
                for item in staged:
                    if item.entry.persisted and item.respond is not None:
                        item.respond(None, err)
                staged = [s for s in staged if not s.entry.persisted]
        touched = set()
        for item in staged:
            self._box(item.recipient).push(item.entry)
            touched.add(item.recipient)
            if item.respond is not None:
                item.respond(item.entry.id, None)
        for callback in after:
            callback()
        for name in touched:
            self._pump(name)
        # Sending may have consumed the socket's edge-triggered readiness: look again.
        if self._sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self._loop.call_soon(self._on_readable)

    def _undo(self, batch: Batch) -> None:
        """A failed commit: forget the seqs and channel marks it would have written, so a resend is taken anew."""
        for name, old in batch.undo_seqs.items():
            if old is None:
                self._next_seq.pop(name, None)
            else:
                self._next_seq[name] = old
        for key, mark in batch.undo_chans.items():
            if mark is None:
                self._chans.pop(key, None)
            else:
                self._chans[key] = mark

    # ---- delivering ----

    def _pump(self, name: str) -> None:
        info = self._agents.get(name)
        if info is None or info.session is None:
            return
        box = self._box(name)
        for entry in box.take(self.window):
            self._send(info.session.identity, "deliver", id=entry.id, seq=entry.seq, sender=entry.sender,
                       body=entry.body, call=entry.kind == "call", info=entry.kind == "info")

    def _finish_call(self, entry: Entry, msg: dict[str, Any]) -> None:
        timer = self._calls.pop(entry.id, None)
        if timer is None:
            return  # it timed out already; the caller has its answer
        timer.cancel()
        error = msg.get("error")
        if isinstance(error, dict):
            entry.caller(None, FoundationError.from_wire(error, unknown=ErrorCode.HANDLER_ERROR))
        else:
            entry.caller(msg.get("reply"), None)

    def _expire_call(self, entry: Entry, timeout: float) -> None:
        if self._calls.pop(entry.id, None) is not None:
            entry.caller(None, FoundationError(ErrorCode.TIMEOUT, f"no reply within {timeout}s"))

    def _fail_call(self, entry: Entry, code: ErrorCode, message: str) -> None:
        if entry.kind == "call":
            timer = self._calls.pop(entry.id, None)
            if timer is not None:
                timer.cancel()
                entry.caller(None, FoundationError(code, message))

    # ---- sessions and liveness ----

    def _disconnect(self, name: str) -> None:
        info = self._agents.get(name)
        if info is None or info.session is None:
            return
        self._sessions.pop(info.session.identity, None)
        info.session = None
        box = self._boxes.get(name)
        if box is not None:
            for entry in box.reset():
                self._fail_call(entry, ErrorCode.AGENT_DOWN, f"{name} went down before it answered")

    def _arm_heartbeat_check(self) -> None:
        if self._heartbeat_timer is None:
            self._heartbeat_timer = self._loop.call_later(self.heartbeat, self._check_liveness)

    def _check_liveness(self) -> None:
        """Kill agents that stopped talking; runs only while some agent is connected."""
        self._heartbeat_timer = None
        now = self._loop.clock()
        connected = [i.session for i in self._agents.values() if i.session is not None]
        for session in connected:
            if session is not None and session.name and now - session.last_seen > self.liveness(session.name):
                log.warning("%s sent no heartbeat for %.1fs; killing it", session.name, now - session.last_seen)
                self._disconnect(session.name)
                self._kill(session.name, "missed heartbeats")
        if any(i.session is not None for i in self._agents.values()):
            self._arm_heartbeat_check()

    # ---- helpers ----

    def _box(self, name: str) -> Mailbox:
        box = self._boxes.get(name)
        if box is None:
            box = self._boxes[name] = Mailbox(self._bound(name))
        return box

    def _responder(self, identity: bytes, ref: int) -> Respond:
        def respond(result: Any, err: FoundationError | None) -> None:
            if err is not None:
                self._send(identity, "reject", ref=ref, error=err.to_wire())
            else:
                self._send(identity, "accept", ref=ref, id=result)

        return respond

    def _send(self, identity: bytes, kind: str, **fields: Any) -> None:
        try:
            frame = wire.encode(kind, **fields)
        except wire.WireError as err:  # a reply too large for its frame: the caller still learns which call failed
            ref = fields.get("ref")
            frame = wire.encode(kind if kind == "reply" and ref is not None else "error", error=err.to_wire(),
                                **({"ref": ref} if kind == "reply" and ref is not None else {}))
        try:
            self._sock.send_multipart([identity, frame], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.debug("send to %r failed: %s", identity, exc)

