"""The offline checker of a chaos history (``history.py``): pure, no IO, no knowledge of Foundation.

    events ──pair()──> operations ──check()──> Result: lost, unexpected, duplicated, reordered, stale, ...

Rules, for messages (the key of one is (recipient, sender, n)):

- **lost**: a send acknowledged (``ok``) whose effect is not in its recipient's final read.
- **unexpected**: an effect in a final read that no send could have caused: never invoked, or every attempt
  ``fail``ed (a definite "not done").
- **duplicated**: a message whose effect is in the final read more than once (counted once per message).
- **reordered**: a channel (one sender to one recipient) where a message's effect comes *after* that of a message
  whose send was invoked only after this one's was acknowledged (real-time order: Jepsen's). Unknown outcomes
  carry no order: a send whose reply was lost is concurrent with everything after it.
- **stale**: a call to a recipient, invoked after the send of message n on some channel was acknowledged, whose
  reply says that channel's last applied message is below n (the mailbox is first in, first out).
- **unread**: acknowledged messages to a recipient with no final read: nothing can be said of them (a failure of
  the run, not a verdict).

``unknown`` (``info``, or no completion at all) is allowed either way, as in Jepsen: applied once or not at all.

For workflows (command steps, not idempotent, one effect line per run of a step):

- a run acknowledged but unknown to the daemon at the end: **lost**; a step ``done`` with no effect: **lost**;
- a step run more than once: **duplicated**; an effect for a run never invoked, or whose run failed, or for a step
  still ``pending``: **unexpected**; a workflow still ``running`` after the heal: **stuck**.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

INF = float("inf")
DONE_STATES = {"completed", "failed", "cancelled"}


@dataclass
class Op:
    process: str
    f: str
    value: Any
    invoke_i: int
    status: str = "info"  # ok | fail | info (no completion counts as info)
    done_i: float = INF
    result: Any = None


@dataclass
class Result:
    lost: list[Any] = field(default_factory=list)
    unexpected: list[Any] = field(default_factory=list)
    duplicated: list[Any] = field(default_factory=list)
    reordered: list[Any] = field(default_factory=list)
    stale: list[Any] = field(default_factory=list)
    unread: list[Any] = field(default_factory=list)
    stuck: list[Any] = field(default_factory=list)
    ops: Counter[str] = field(default_factory=Counter)  # "send ok", "call info", ...
    applied: int = 0

    @property
    def counts(self) -> tuple[int, int, int, int]:
        return len(self.lost), len(self.unexpected), len(self.duplicated), len(self.reordered)

    @property
    def valid(self) -> bool:
        return not (self.lost or self.unexpected or self.duplicated or self.reordered or self.stale
                    or self.unread or self.stuck)

    def merge(self, other: Result) -> None:
        for name in ("lost", "unexpected", "duplicated", "reordered", "stale", "unread", "stuck"):
            getattr(self, name).extend(getattr(other, name))
        self.ops.update(other.ops)
        self.applied += other.applied


def pair(events: Iterable[dict[str, Any]]) -> list[Op]:
    """Match each invoke with the next completion of the same process, in history order."""
    ops: list[Op] = []
    pending: dict[str, Op] = {}
    for event in events:
        process, kind = event["process"], event["type"]
        if kind == "invoke":
            op = Op(process, event["f"], event["value"], event["i"])
            pending[process] = op  # an earlier one never completed: it stays unknown
            ops.append(op)
            continue
        op_or_none = pending.pop(process, None)
        if op_or_none is None or op_or_none.f != event["f"]:
            raise ValueError(f"history event {event['i']}: a {kind} of {event['f']} by {process} without its invoke")
        op_or_none.status, op_or_none.done_i, op_or_none.result = kind, event["i"], event["value"]
    return ops


def check(events: Iterable[dict[str, Any]]) -> Result:
    ops = pair(events)
    res = Result()
    for op in ops:
        res.ops[f"{op.f} {op.status}"] += 1
    _check_messages(ops, res)
    _check_workflows(ops, res)
    return res


def _check_messages(ops: list[Op], res: Result) -> None:
    # key (to, ch, n) -> the statuses of its attempts, its first invoke, its first ok
    statuses: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    first_invoke: dict[tuple[str, str, int], int] = {}
    first_ok: dict[tuple[str, str, int], float] = {}
    reads: dict[str, list[tuple[str, int]]] = {}
    calls: list[Op] = []
    for op in ops:
        if op.f == "send":
            key = (op.value["to"], op.value["ch"], op.value["n"])
            statuses[key].add(op.status)
            first_invoke.setdefault(key, op.invoke_i)
            if op.status == "ok":
                first_ok[key] = min(first_ok.get(key, INF), op.done_i)
        elif op.f == "read" and op.status == "ok":
            reads[op.result["to"]] = [(ch, n) for ch, n in op.result["applied"]]  # the last read wins
        elif op.f == "call" and op.status == "ok":
            calls.append(op)

    for to, applied in reads.items():
        res.applied += len(applied)
        seen = Counter(applied)
        for (ch, n), times in seen.items():
            key = (to, ch, n)
            if times > 1:
                res.duplicated.append({"to": to, "ch": ch, "n": n, "times": times})
            if not statuses.get(key, set()) - {"fail"}:
                res.unexpected.append({"to": to, "ch": ch, "n": n, "sent": sorted(statuses.get(key, ()))})
        res.reordered.extend(_order_violations(to, applied, first_invoke, first_ok))
    applied_sets = {to: set(applied) for to, applied in reads.items()}
    for to, ch, n in first_ok:
        if to not in reads:
            res.unread.append({"to": to, "ch": ch, "n": n})
        elif (ch, n) not in applied_sets[to]:
            res.lost.append({"to": to, "ch": ch, "n": n})
    res.stale.extend(_stale_calls(calls, first_ok))


def _order_violations(to: str, applied: list[tuple[str, int]], first_invoke: dict[tuple[str, str, int], int],
                      first_ok: dict[tuple[str, str, int], float]) -> list[dict[str, Any]]:
    """Per channel, effects in applied order (first copies): a message is out of order when a message applied after
    it was acknowledged before this one was even invoked."""
    per_channel: dict[str, list[int]] = defaultdict(list)
    seen: set[tuple[str, int]] = set()
    for ch, n in applied:
        if (ch, n) not in seen:
            seen.add((ch, n))
            per_channel[ch].append(n)
    found = []
    for ch, ns in per_channel.items():
        later_ok = INF  # the earliest acknowledgement among the messages applied after position i
        for n in reversed(ns):
            key = (to, ch, n)
            invoked = first_invoke.get(key)
            if invoked is not None and later_ok < invoked:
                found.append({"to": to, "ch": ch, "n": n, "applied_order": ns[:50]})
            later_ok = min(later_ok, first_ok.get(key, INF))
    return found


def _stale_calls(calls: list[Op], first_ok: dict[tuple[str, str, int], float]) -> list[dict[str, Any]]:
    acked: dict[tuple[str, str], list[tuple[float, int]]] = defaultdict(list)  # (to, ch) -> [(ok index, n)]
    for (to, ch, n), ok_i in first_ok.items():
        acked[to, ch].append((ok_i, n))
    found = []
    for call in calls:
        to = call.value["to"]
        last = call.result.get("last", {}) if isinstance(call.result, dict) else {}
        for (dest, ch), acks in acked.items():
            if dest != to:
                continue
            must = max((n for ok_i, n in acks if ok_i < call.invoke_i), default=0)
            if last.get(ch, 0) < must:
                found.append({"to": to, "ch": ch, "call": call.invoke_i, "saw": last.get(ch, 0), "acked": must})
    return found


def _check_workflows(ops: list[Op], res: Result) -> None:
    runs: dict[str, set[str]] = defaultdict(set)
    steps_of: dict[str, list[str]] = {}
    finals: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] | None = None
    for op in ops:
        if op.f == "wf-run":
            runs[op.value["id"]].add(op.status)
            steps_of[op.value["id"]] = list(op.value["steps"])
        elif op.f == "wf-final" and op.status == "ok":
            finals[op.result["id"]] = op.result
        elif op.f == "wf-effects" and op.status == "ok":
            counts = dict(op.result["counts"])
    if not runs and counts is None:
        return
    effects = Counter(counts or {})
    for wf_id, statuses in runs.items():
        final = finals.get(wf_id)
        if final is None:
            if "ok" in statuses:
                res.unread.append({"workflow": wf_id})
            continue
        if final.get("missing"):
            if "ok" in statuses:
                res.lost.append({"workflow": wf_id, "why": "acknowledged run unknown to the daemon"})
            continue
        if final["state"] == "running":
            res.stuck.append({"workflow": wf_id, "state": final["state"], "steps": final["steps"]})
        for step in steps_of[wf_id]:
            state, times = final["steps"].get(step), effects.get(f"{wf_id}/{step}", 0)
            where = {"workflow": wf_id, "step": step, "state": state, "runs": times}
            if times > 1:
                res.duplicated.append(where)
            if state == "done" and times == 0:
                res.lost.append(where)
            if state == "pending" and times > 0:
                res.unexpected.append(where)
    for name, times in effects.items():
        wf_id = name.rsplit("/", 1)[0]
        if times and not runs.get(wf_id, set()) - {"fail"}:
            res.unexpected.append({"effect": name, "run": sorted(runs.get(wf_id, ()))})
