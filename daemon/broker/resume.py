"""The broker across an in-place upgrade of foundationd (docs/upgrade.md): what the old image hands over, how the
new one takes it back, and how each agent's session resumes without a message lost or handled twice.

    old image: fail_calls ─> flush (commit, accepts, deliveries) ─> snapshot ─> close (linger: all sent arrives)
    new image: Outbox reopened (undone casts, seqs, channel marks) ─> restore(snapshot): sessions (resuming),
               mailboxes in their order (in flight stays in flight), timers, monitors, totals (per agent too)
    agent's DEALER reconnects (same routing id) ─frame─> new image: resume {received}   (frames dropped meanwhile)
                                                <─────── resumed {sent}, then every frame after ``received`` again
               ─> the session is live again: what is queued goes out

* Frames: ZeroMQ's ipc connection dies with the exec. Everything the old image sent is flushed before (linger)
  and read by the agent before it sees the connection end. Of what the agent sent, the old image handled the
  first ``received`` (the session's count, handed over); the rest may have died in the old connection or may
  arrive on the new one. So the new image drops a resuming session's frames until ``resumed`` and the agent
  sends again, in order, everything after ``received`` (agents/runtime.py keeps its last frames for this).
* Casts: accepted means committed, so the outbox has them; the mailboxes' order and who has what in flight come
  from the snapshot, so nothing is delivered twice (and the agents' seq dedup would skip it anyway).
* Calls are not persisted and their callers' connections (control clients) close with the exec: each call still
  pending is failed before, ``upgrading`` (category unavailable: retryable), its message saying that its outcome is
  unknown when it was already delivered. An agent's answer to such a call is dropped as stale by the new image.
* Ticks and down notices queued or in flight are handed over with their bodies; armed timers keep their
  deadlines (monotonic: the clock is the same across execve); monitors and liveness carry on.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from daemon.broker.mailbox import Entry
from ipc.errors import ErrorCode

if TYPE_CHECKING:
    from daemon.broker.broker import Broker

UPGRADING = ("foundationd was upgraded in place while this call was pending; call again (if it had been delivered "
             "already, whether it was handled is unknown)")


def refusal(broker: Broker, agents: list[str]) -> str | None:
    """Why these running agents' sessions cannot be handed over, or None. An anonymous session (the cluster
    bridge's calls into this host, a script's) has no routing id of its own and no way to resume: refused."""
    if (count := broker._peers.anonymous()) > 0:
        return (f"{count} anonymous broker session(s) are open (the cluster bridge's, or a script's): they cannot "
                "resume across an upgrade")
    for name in agents:
        session = broker._peers.session(name)
        if session is None:
            return f"{name} is not connected to the broker (wait until it has said hello)"
        if session.resuming:
            return f"{name} has not resumed from the last upgrade yet"
        if not session.resumable:
            return f"{name} runs an agent runtime that cannot resume across an upgrade (restart it once)"
    return None


def settle(broker: Broker) -> int:
    """The old image's last broker turn: pending calls failed, then everything staged committed and sent."""
    failed = fail_calls(broker)
    broker._flush()
    return failed


def fail_calls(broker: Broker) -> int:
    """Answer every pending call now (``upgrading``) and take it out of its mailbox; returns how many."""
    failed = 0
    for box in broker._boxes.values():
        calls = [e for e in (*box.inflight.values(), *box.queue) if e.kind == "call"]
        if not calls:
            continue
        box.queue = deque(e for e in box.queue if e.kind != "call")
        for entry in calls:
            box.inflight.pop(entry.id, None)
            broker._calls.fail(entry, ErrorCode.UPGRADING, UPGRADING)
            failed += 1
    return failed


def snapshot(broker: Broker) -> dict[str, Any]:
    """Plain data for the handover file, taken once the last turn is committed (``Broker.flush``)."""
    boxes = {}
    for name, box in broker._boxes.items():
        entries = [_entry(e, True) for e in box.inflight.values()] + [_entry(e, False) for e in box.queue]
        if entries:
            boxes[name] = entries
    return {
        "sessions": broker._peers.hand_over(),
        "user_sockets": broker._peers.user_sockets(),
        "boxes": boxes,
        "counter": broker._admission._counter,
        "gaps": [[sender, to, chan] for (sender, to), chan in broker._admission.gaps.items()],
        "monitors": [[watcher, ref, target] for (watcher, ref), target in broker._monitors._targets.items()],
        "timers": broker._timers.hand_over(),
        "counters": dict(broker.counters),
        "by_agent": {name: list(counts) for name, counts in broker.by_agent.items()},
    }


def _entry(e: Entry, inflight: bool) -> dict[str, Any]:
    if e.persisted:  # its body is in the outbox
        return {"id": e.id, "seq": e.seq, "inflight": inflight}
    return {"id": e.id, "seq": None, "inflight": inflight, "kind": e.kind, "sender": e.sender, "body": e.body}


def restore(broker: Broker, data: dict[str, Any]) -> None:
    """Take back the old image's broker (``snapshot``), after the outbox was read again: nothing is sent until each
    session has resumed."""
    for uid, gid in data.get("user_sockets", []):  # agents running as another user reconnect to theirs
        broker.endpoint_for(int(uid), int(gid))
    broker._peers.adopt(data["sessions"])
    for name, entries in data["boxes"].items():
        box = broker._box(name)
        recovered = {e.seq: e for e in box.queue if e.persisted}
        inflight, queue = {}, deque()
        for raw in entries:
            if raw["seq"] is not None:
                entry = recovered.pop(raw["seq"], None)
                if entry is None:
                    continue  # (done and deleted: cannot happen after the flush, but nothing to deliver)
            else:
                entry = Entry(raw["id"], None, raw["sender"], raw["body"], kind=raw["kind"])
            if raw["inflight"]:
                entry.sent = broker._loop.clock()
                inflight[entry.id] = entry
            else:
                queue.append(entry)
        queue.extend(sorted(recovered.values(), key=lambda e: e.seq or 0))  # (none in practice)
        box.inflight.clear()
        box.inflight.update(inflight)
        box.queue = queue
    broker._admission._counter = max(broker._admission._counter, int(data["counter"]))
    for sender, to, chan in data["gaps"]:
        broker._admission.gaps[(sender, to)] = chan
    for watcher, ref, target in data["monitors"]:
        broker._monitors.watch(watcher, int(ref), target)
    broker._timers.adopt(data["timers"])
    for key, value in data["counters"].items():
        if key in broker.counters:
            broker.counters[key] = int(value)
    for name, counts in data.get("by_agent", {}).items():
        broker.by_agent[name] = [int(c) for c in counts]
    if data["sessions"]:
        broker._liveness.arm()
