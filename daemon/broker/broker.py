"""The message broker: a ZeroMQ ROUTER on the daemon's loop, with a durable outbox and acknowledgements.

    agents, clients ──frame──> peers.py (ROUTER, sessions, hello tokens, per-uid sockets)
                                  │ cast / call / done / monitor / timer ...
                                  v
    control send/call ───────> Broker (this facade: wiring, group commit, delivery)
                                  │ Recipient(known, queued, bound)
                                  v
                               admission.py (pure: admit, dedup, gaps, stage) ──> Accepted | Duplicate | Refused
                                  │ end of loop turn: Turn(batch, staged, duplicates)
                                  v
                               outbox.py (one LMDB txn, fsync) ──ok──> accept to sender, push to mailbox.py
                                  │ failed: admission.undo()                         │
                                  v                                                  │ take(window)
                               reject (internal)                                     v
                                                              peers.send(deliver) ──> recipient
    recipient ──done──> mailbox.done ──> delete in the next txn; a call's reply ──> calls.py ──> caller
    timers.py (ticks), monitors.py (down notices) ──> admission.info ──> mailbox;  liveness.py ──> kill

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

import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb

from daemon.broker.admission import Accepted, Admission, Receipt, Recipient, Refused, Respond
from daemon.broker.calls import PendingCalls
from daemon.broker.latency import Latency
from daemon.broker.liveness import Liveness
from daemon.broker.mailbox import Entry, Mailbox
from daemon.broker.monitors import Monitors
from daemon.broker.outbox import Outbox, outbox_path
from daemon.broker.peers import Handler, Peers, Session
from daemon.broker.timers import MIN_TICK, Timers
from daemon.shell.loop import EventLoop, TimerHandle
from daemon.shell.socket_path import check_startup_socket
from ipc import wire
from ipc.errors import ErrorCode, FoundationError

__all__ = ["DELETE_DELAY", "MIN_TICK", "Broker", "Receipt", "Respond", "Session"]

DELETE_DELAY = 0.05  # s: done messages are deleted with the next commit, or alone after this long without one

log = logging.getLogger("foundationd.broker")


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
        window: int = 256,  # in flight to one agent: as many as it handles in one batch (runtime.MAX_BATCH)
        services: dict[str, Handler] | None = None,
    ) -> None:
        """``agent_alive(name)``: None if no agent of that name is in the tree, else whether it runs."""
        self._loop = loop
        self._agent_alive = agent_alive
        self._kill = kill
        self._bound = mailbox_bound
        self.heartbeat = heartbeat
        self.liveness = liveness
        self._on_hello = on_hello
        # An agent finished a message (and committed): its name and the message's body.
        self.on_done: Callable[[str, Any], None] = lambda name, body: None
        self.window = window
        check_startup_socket(runtime_dir / wire.BROKER_SOCKET)  # before anything is opened: exit 1, one line
        self._outbox = Outbox(outbox_path(state_dir))
        self._boxes: dict[str, Mailbox] = {}
        self._flush_scheduled = False
        self._delete_timer: TimerHandle | None = None
        self._calls = PendingCalls(loop)
        self._monitors = Monitors()
        self._timers = Timers(loop, lambda name, ref: self._stage_info(name, {"tick": ref}))
        self._admission = self._recover()
        handlers: dict[str, Handler] = {
            "cast": self._on_cast, "call": self._on_call, "done": self._on_done, "heartbeat": self._on_heartbeat,
            "monitor": self._on_monitor, "demonitor": self._on_demonitor, "timer": self._on_timer,
            "cancel_timer": self._on_cancel_timer, "answer": self._on_answer, "routes": self._on_routes,
            **(services or {}),  # frame kinds of daemon services (resilience: svc, svc_cast)
        }
        self._peers = Peers(runtime_dir, loop, heartbeat=heartbeat, handlers=handlers, on_hello=self._hello)
        self._peers.on_resumed = self._resumed
        self.endpoint = self._peers.endpoint
        self._liveness = Liveness(loop, heartbeat, liveness, self._peers.connected, self._silent)
        # Totals since the daemon started (metrics), and who hears of a refused message (the event stream).
        self.counters = dict.fromkeys(("accepted", "delivered", "redelivered", "done", "rejected", "failed"), 0)
        self.by_agent: dict[str, list[int]] = {}  # name -> [done, failed]: a rollout's canary judged on its own
        self.accept_latency, self.handle_latency = Latency(), Latency()
        # (when, seconds from delivery to done) of finished messages, for the migration gates while they watch.
        self.latencies: deque[tuple[float, float]] | None = None
        self.on_rejected: Callable[[str | None, str, FoundationError], None] = lambda sender, to, err: None
        # The cluster (DESIGN 3.10), as the bridge tells it: this node's name, and the names that live only on
        # other nodes (name -> node). A cast or call to NAME@other, or to such a name, goes to the bridge.
        self.cluster_node: str | None = None
        self.remote: dict[str, str] = {}

    # ---- lifecycle ----

    def _recover(self) -> Admission:
        stored, seqs, chans = self._outbox.load()
        admission = Admission(seqs, chans)
        for item in stored:
            self._box(item.recipient).push(admission.recovered(item.recipient, item.seq, item.record))
        if stored:
            log.info("recovered %d undelivered message(s) from the outbox", len(stored))
        return admission

    def close(self, linger: int = 0) -> None:
        if self._admission:
            self._flush(deletes=True)
        self._peers.close(linger)
        self._outbox.close()

    # ---- hooks for the daemon ----

    def endpoint_for(self, uid: int, gid: int) -> str:
        """The endpoint an agent running as ``uid`` connects to (``broker-UID.sock``, see peers.py)."""
        return self._peers.endpoint_for(uid, gid)

    def expect(self, name: str) -> str:
        """A new incarnation of agent ``name`` is about to start: the token only it may say hello with."""
        self._disconnect(name)
        return self._peers.new_token(name)

    def agent_exited(self, name: str, reason: str) -> None:
        """The agent's process is gone: unfinished casts wait for the next incarnation; calls fail."""
        if not self._peers.knows(name):
            return
        self._peers.revoke(name)
        self._disconnect(name)
        self._timers.clear(name)
        self._calls.owner_down(name)
        box = self._boxes.get(name)
        if box is not None:  # ticks and down notices were for this incarnation's refs: the next one has its own
            box.queue = deque(e for e in box.queue if e.kind != "info")
        for watcher, ref in self._monitors.exited(name):
            self._stage_info(watcher, {"down": {"ref": ref, "target": name, "reason": reason}})

    def forget(self, name: str) -> None:
        """The agent left the tree: its undone messages are dropped (and logged)."""
        self.agent_exited(name, "detached")
        self._peers.forget(name)
        box = self._boxes.pop(name, None)
        if box is not None:
            for entry in box.drain():
                self._calls.fail(entry, ErrorCode.AGENT_DOWN, f"{name} was detached")
        dropped = self._outbox.drop_recipient(name)
        if dropped:
            log.warning("dropped %d undelivered message(s) to detached agent %s", dropped, name)

    def oldest(self) -> float | None:
        """When the oldest message still queued or in flight was admitted (monotonic), for metrics."""
        heads = [at for box in self._boxes.values() if (at := box.oldest()) is not None]
        return min(heads) if heads else None

    def answer(self, session: Session, kind: str, **fields: Any) -> None:
        """For services: a frame back to the session a frame of theirs came from."""
        self._peers.send(session.identity, kind, **fields)

    def push(self, to: str, kind: str, **fields: Any) -> bool:
        """For services: a frame to agent ``to``'s live session; False when it has none."""
        session = self._peers.session(to)
        if session is None or session.resuming:
            return False
        self._peers.send(session.identity, kind, **fields)
        return True

    def push_info(self, body: Any) -> list[str]:
        """A notice from the daemon to every connected agent (a new flag table); those not connected get the
        news in their welcome. Returns their names."""
        names = sorted(s.name for s in self._peers.connected() if s.name is not None)
        for name in names:
            self._stage_info(name, body)
        return names

    def on_welcome(self, fields: Callable[[str], dict[str, Any]]) -> None:
        """More fields for each agent's welcome frame (the flag table)."""
        self._peers.welcome_fields = fields

    def undone(self, name: str) -> list[Any]:
        """The bodies of the messages to ``name`` accepted and not yet done (in flight first, then queued)."""
        box = self._boxes.get(name)
        return [e.body for e in [*box.inflight.values(), *box.queue]] if box is not None else []

    def stats(self) -> dict[str, Any]:
        return {
            "monitors": len(self._monitors),
            "pending_calls": len(self._calls),
            "mailboxes": {name: len(box) for name, box in self._boxes.items() if len(box)},
            "connected": sorted(s.name for s in self._peers.connected() if s.name is not None),
        }

    # ---- the control socket's entry points (anonymous sender) ----

    def send(self, to: str, body: Any, respond: Respond, producer: str | None = None, seq: int | None = None) -> None:
        """A cast from outside the tree, answered with a ``Receipt``. With ``producer`` and ``seq`` (increasing per
        producer) a resend after a lost answer is recognised: its receipt says ``duplicate``, with the first id
        when it is the producer's last accepted number, and nothing is queued twice."""
        if producer is not None and seq is not None:
            self._cast(f"ctl:{producer}", to, body, [seq, 0], respond, gapless=True)
        else:
            self._cast(None, to, body, None, respond)

    def call(self, to: str, body: Any, timeout: float, respond: Respond) -> None:
        self._call(None, to, body, timeout, respond)

    # ---- frames ----

    def _hello(self, name: str) -> None:
        box = self._box(name)
        self._reset(box)  # anything in flight to an earlier connection goes again, in order
        self._pump(name)
        self._liveness.arm()
        self._on_hello(name)  # the agent is ready: its supervisor may start the next sibling

    def _resumed(self, name: str) -> None:
        """A session handed over by the previous image caught up (daemon/broker/resume.py): what waits goes out."""
        self._pump(name)
        self._liveness.arm()

    def _on_cast(self, session: Session, msg: dict[str, Any]) -> None:
        chan = msg.get("chan")
        if not (isinstance(chan, list) and len(chan) == 2 and all(isinstance(x, int) for x in chan)):
            chan = None
        identity, ref = session.identity, msg["ref"]

        def respond(receipt: Receipt | None, err: FoundationError | None) -> None:
            if err is not None:
                self._peers.send(identity, "reject", ref=ref, error=err.to_wire())
            else:
                assert receipt is not None
                self._peers.send(identity, "accept", ref=ref, id=receipt.wire_id)

        self._cast(session.name, msg["to"], msg["body"], chan, respond)

    def _on_call(self, session: Session, msg: dict[str, Any]) -> None:
        identity, ref = session.identity, msg["ref"]

        def respond(result: Any, err: FoundationError | None) -> None:
            if err is not None:
                self._peers.send(identity, "reply", ref=ref, error=err.to_wire())
            else:
                self._peers.send(identity, "reply", ref=ref, body=result)

        self._call(session.name, msg["to"], msg["body"], float(msg["timeout"]), respond)

    def _on_done(self, session: Session, msg: dict[str, Any]) -> None:
        if session.name is None:
            return
        box = self._boxes.get(session.name)
        entry = box.done(msg["id"]) if box is not None else None
        if entry is None:
            return  # stale: an earlier incarnation's delivery, already requeued
        self.counters["done"] += 1
        mine = self.by_agent.setdefault(session.name, [0, 0])
        mine[0] += 1
        if "error" in msg:
            self.counters["failed"] += 1
            mine[1] += 1
        now = self._loop.clock()
        self.handle_latency.observe(now - entry.sent)
        if self.latencies is not None and entry.sent:
            self.latencies.append((now, now - entry.sent))
        if self._admission.done(session.name, entry) and self._delete_timer is None:
            self._delete_timer = self._loop.call_later(DELETE_DELAY, self._flush_deletes)
        if entry.kind == "call":
            if msg.get("deferred") is True:
                self._calls.defer(entry, session.name)  # answered later by an answer frame
            else:
                self._calls.finish(entry, msg)
        elif entry.kind == "info" and isinstance(entry.body, dict) and "tick" in entry.body:
            self._timers.ticked(session.name, entry.body["tick"])
        self._pump(session.name)
        self.on_done(session.name, entry.body)

    def _on_answer(self, session: Session, msg: dict[str, Any]) -> None:
        if session.name is not None:
            self._calls.answer(session.name, msg)

    def _on_routes(self, session: Session, msg: dict[str, Any]) -> None:
        """The bridge's view of the cluster registry; answered with the agents connected here (what it publishes)."""
        if session.name != "bridge":
            self._peers.send(session.identity, "reply", ref=msg["ref"],
                             error=wire.error_body(ErrorCode.UNAUTHORIZED, "only the cluster bridge sets routes"))
            return
        remote = msg["remote"]
        self.cluster_node = msg["node"]
        self.remote = {str(k): str(v) for k, v in remote.items() if "@" not in str(k)}
        agents = sorted(s.name for s in self._peers.connected() if s.name is not None)
        self._peers.send(session.identity, "reply", ref=msg["ref"], body={"agents": agents})

    def _on_heartbeat(self, session: Session, msg: dict[str, Any]) -> None:
        busy = msg.get("busy")  # last_seen was updated for every frame; "busy": S announces a silence of S seconds
        if isinstance(busy, int | float) and not isinstance(busy, bool) and 0 <= busy <= 86400:
            session.busy_until = self._loop.clock() + busy

    def _on_monitor(self, session: Session, msg: dict[str, Any]) -> None:
        ref, target = msg["ref"], msg["target"]
        if session.name is None:
            self._peers.send(session.identity, "reject", ref=ref,
                             error=wire.error_body(ErrorCode.BAD_REQUEST, "only agents may monitor"))
            return
        self._peers.send(session.identity, "accept", ref=ref, id=f"monitor/{ref}")
        if self._agent_alive(target):
            self._monitors.watch(session.name, ref, target)
        else:
            self._stage_info(session.name, {"down": {"ref": ref, "target": target, "reason": "noproc"}})

    def _on_demonitor(self, session: Session, msg: dict[str, Any]) -> None:
        if session.name is not None:
            self._monitors.unwatch(session.name, msg["ref"])

    def _on_timer(self, session: Session, msg: dict[str, Any]) -> None:
        if session.name is None:  # ticks go to an agent's mailbox: an anonymous client has none
            self._peers.send(session.identity, "reject", ref=msg["ref"],
                             error=wire.error_body(ErrorCode.BAD_REQUEST, "only agents may set timers"))
            return
        self._timers.set(session.name, msg["ref"], float(msg["after"]), msg["every"])

    def _on_cancel_timer(self, session: Session, msg: dict[str, Any]) -> None:
        if session.name is not None:
            self._timers.cancel(session.name, msg["ref"])

    # ---- accepting ----

    def _recipient(self, to: str) -> Recipient:
        if self._agent_alive(to) is None:
            return Recipient(known=False)
        box = self._box(to)
        box.bound = self._bound(to)  # now, not when the box was made: a box can outlive its agent's spec (a reload,
        return Recipient(known=True, queued=len(box), bound=box.bound)  # a detach and attach again)

    def _resolve(self, to: str) -> tuple[str, str | None]:
        """(local recipient, remote target): ``NAME@node`` on another node, or a name only another node runs (the
        bridge's routes), goes to the local ``bridge`` (no local name has an @); ``NAME@<this node>`` is ``NAME``."""
        if "@" in to:
            if len(to) > 200 or not wire.REMOTE_TARGET.fullmatch(to):
                raise FoundationError(ErrorCode.BAD_REQUEST, f"a remote target is NAME@node (NATS subject tokens), "
                                      f"not {to[:200]!r}")
            name, _, node = to.partition("@")
            return (name, None) if node == self.cluster_node else ("bridge", to)
        if to in self.remote and self._agent_alive(to) is None:
            return "bridge", f"{to}@{self.remote[to]}"
        return to, None

    def _cast(self, sender: str | None, to: str, body: Any, chan: list[int] | None, respond: Respond, *,
              gapless: bool = False) -> None:
        try:
            to, remote = self._resolve(to)
        except FoundationError as err:
            self._rejected(sender, to, err)
            respond(None, err)
            return
        if remote is not None:  # the cluster bridge carries it
            body = {"to": remote, "body": body}
        decision = self._admission.cast(sender, to, body, chan, self._recipient(to), respond=respond, gapless=gapless)
        if isinstance(decision, Refused):
            self._rejected(sender, to, decision.error)
            respond(None, decision.error)
        else:  # accepted or a duplicate: both are answered after this turn's commit
            self._schedule_flush()

    def _call(self, sender: str | None, to: str, body: Any, timeout: float, respond: Respond) -> None:
        try:
            to, remote = self._resolve(to)
        except FoundationError as err:
            self._rejected(sender, to, err)
            respond(None, err)
            return
        if remote is not None:  # the bridge defers its answer until the other node's arrives (or the timeout)
            body = {"op": "call", "to": remote, "body": body, "timeout": timeout}
        decision = self._admission.call(sender, to, body, respond, self._recipient(to))
        if isinstance(decision, Refused):
            self._rejected(sender, to, decision.error)
            respond(None, decision.error)
        elif isinstance(decision, Accepted):
            self._calls.start(decision.staged.entry, timeout)
            self._schedule_flush()

    def _stage_info(self, to: str, body: Any) -> None:
        self._admission.info(to, body)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush_deletes(self) -> None:
        self._delete_timer = None
        self._flush(deletes=True)

    def _flush(self, *, deletes: bool = False) -> None:
        """Group commit: one durable transaction for the turn, then accepts and deliveries. Deletions of done
        messages ride along (admission.done says why they need no commit of their own)."""
        self._flush_scheduled = False
        turn = self._admission.end_turn(deletes=deletes)
        if turn.batch.deletes and self._delete_timer is not None and not self._admission.deletes_pending:
            self._delete_timer.cancel()
            self._delete_timer = None
        staged = turn.staged
        if turn.batch:
            try:
                self._outbox.commit(turn.batch)
            except lmdb.Error as exc:
                log.exception("outbox commit failed")
                err = FoundationError(ErrorCode.INTERNAL, f"could not persist the message: {exc}",
                                      category="infrastructure", context={"exception": type(exc).__name__})
                staged, tell = self._admission.undo(turn, err)
                self.counters["rejected"] += len(tell)
                for respond, error in tell:
                    respond(None, error)
        touched, gone = set(), set()
        self.counters["accepted"] += len(staged)
        now = self._loop.clock()
        for item in staged:
            self.accept_latency.observe(now - item.entry.at)
            if item.respond is not None:
                item.respond(Receipt(item.entry.id), None)
            if self._agent_alive(item.recipient) is None:  # detached since it was admitted, earlier in this turn
                gone.add(item.recipient)
                self._calls.fail(item.entry, ErrorCode.AGENT_DOWN, f"{item.recipient} was detached")
                continue
            self._box(item.recipient).push(item.entry)
            touched.add(item.recipient)
        for name in gone:
            self._outbox.drop_recipient(name)
        for respond, duplicate in turn.duplicates:
            respond(duplicate.receipt, None)
        for name in touched:
            self._pump(name)
        self._peers.look_again()

    # ---- delivering ----

    def _pump(self, name: str) -> None:
        session = self._peers.session(name)
        if session is None or session.resuming:
            return
        entries = self._box(name).take(self.window)
        self.counters["delivered"] += len(entries)
        now = self._loop.clock()
        for entry in entries:
            entry.sent = now
            if entry.frame is not None:
                self._peers.send_frame(session.identity, entry.frame)
            else:
                self._peers.send(session.identity, "deliver", id=entry.id, seq=entry.seq, sender=entry.sender,
                                 body=entry.body, call=entry.kind == "call", info=entry.kind == "info")

    def _disconnect(self, name: str) -> None:
        if not self._peers.drop(name):
            return
        box = self._boxes.get(name)
        if box is not None:
            for entry in self._reset(box):
                self._calls.fail(entry, ErrorCode.AGENT_DOWN, f"{name} went down before it answered")

    def _reset(self, box: Mailbox) -> list[Entry]:
        """The recipient's connection is gone: what it had in flight goes again (counted), calls are returned."""
        self.counters["redelivered"] += sum(1 for entry in box.inflight.values() if entry.persisted)
        return box.reset()

    def _rejected(self, sender: str | None, to: str, error: FoundationError) -> None:
        self.counters["rejected"] += 1
        self.on_rejected(sender, to, error)

    def _silent(self, name: str) -> None:
        self._disconnect(name)
        self._kill(name, "missed heartbeats")

    def _box(self, name: str) -> Mailbox:
        box = self._boxes.get(name)
        if box is None:
            box = self._boxes[name] = Mailbox(self._bound(name))
        return box
