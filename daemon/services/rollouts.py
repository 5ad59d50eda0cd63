"""A rollout of an agent version in the daemon: it replaces worker specs, holds, judges and rolls back (DESIGN 3.8).

    rollout start ──> rollout_core.start (pure) ──> record ──> RolloutStore (LMDB, <state dir>/rollouts)
        ──> PlanRunner([Replace(new spec) of the canary]) (as reload does) ──> settled: the hold begins
    every ``interval`` s: counters ──> Samples ──> migrations_health.figures/judge (the migration's rules; the
                          error rate is the changed children's own, the rest's is shown beside it)
                          tree ──> rollout_core.crashed (a changed child restarted or failed)
        ──> a ``gate`` event (the verdict, the tick, what was decided)
        ──> rollout_core.decide ──> advance (the rest) | finish | rollback: Replace(old spec) of every changed
                                    child, ``rollback`` and ``alert`` events | pause (too few data once held)
    daemon start ──> the stored record: an active rollout's changes are applied again (the tree booted from the
                     config, which has the old version) and its hold starts afresh; a done one's too, on the
                     children whose config still has exactly the version they had before the rollout.

One rollout at a time. Latencies are shared with the migration's sampler: while a migration is configured, the
rollout's p50 gate is not judged (the migration takes the broker's latencies).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lmdb
import orjson

from daemon.core import plan as plans
from daemon.core.spec import WorkerSpec
from daemon.core.tree import Worker
from daemon.services import rollout_core as core
from daemon.services.migrations import take_sample
from daemon.services.migrations_health import Sample, Samples, Thresholds, Verdict, baseline, figures, judge
from daemon.services.plan_runner import PlanRunner
from ipc.errors import ErrorCode, FoundationError

if TYPE_CHECKING:
    from daemon.shell.loop import TimerHandle

log = logging.getLogger("foundationd")
CURRENT = b"current"


class RolloutStore:
    """``<state dir>/rollouts``: the current (or last) rollout's record under one key, fsynced on every change."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._env = lmdb.open(str(path), map_size=4 << 20, subdir=True, sync=True, metasync=True, max_readers=8,
                               max_dbs=0)
        self._env.reader_check()

    def load(self) -> dict[str, Any] | None:
        with self._env.begin() as txn:
            raw = txn.get(CURRENT)
            return orjson.loads(raw) if raw is not None else None

    def save(self, record: dict[str, Any]) -> None:
        with self._env.begin(write=True) as txn:
            txn.put(CURRENT, orjson.dumps(record))

    def close(self) -> None:
        self._env.close()


class Rollouts:
    def __init__(self, app: Any, state_dir: Path, wall: Callable[[], float] = time.time,
                 limits: Thresholds | None = None) -> None:
        self.app, self.state_dir, self.wall, self.limits = app, state_dir, wall, limits or Thresholds()
        self.store: RolloutStore | None = None
        self.record: dict[str, Any] | None = None
        self.samples = Samples(keep=120.0)
        self.canary = Samples(keep=120.0)  # the changed children's messages (done, failed) only
        self.rest = Samples(keep=120.0)  # the targets not changed yet: what the canary is compared with
        self.ticks = 0  # gate checks of the current rollout (each one a ``gate`` event)
        self.entered = 0.0  # monotonic: when the current phase's hold began
        self.base: dict[str, Any] = {}
        self.before: dict[str, int] = {}  # each changed child's restarts when it was changed
        self.generation = 0  # a runner's answer for an older step is ignored
        self._timer: TimerHandle | None = None

    # ---- lifecycle ----

    def start(self) -> None:
        try:
            self.store = RolloutStore(self.state_dir / "rollouts")
            self.record = self.store.load()
        except (OSError, lmdb.Error) as exc:
            log.error("rollouts: the store could not be opened (%s): rollouts are kept in memory only", exc)  # noqa: TRY400
        if self.record is not None and self.record["phase"] in (*core.ACTIVE, "done"):
            self.app.loop.call_later(0, self._resume)  # once the tree has booted

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.store is not None:
            self.store.close()
            self.store = None

    def _resume(self) -> None:
        record = self.record
        if record is None:
            return
        names = [n for n in record["changed"] if isinstance(node := self.app.tree.find_quiet(n), Worker)
                 and (record["phase"] in core.ACTIVE or node.spec == core.backward(node.spec, record["previous"][n]))]
        log.info("rollout %s (%s): applying its version again to %s", record["id"], record["phase"],
                 ", ".join(names) or "nothing")
        if record["phase"] in core.ACTIVE:
            self.record = {**record, "applied": False, "since": None}
            self._save()
            self._arm()
        self._replace(names, forward=True, track=record["phase"] in core.ACTIVE)

    # ---- verbs ----

    def begin(self, args: dict[str, Any], by: str) -> dict[str, Any]:
        if self.record is not None and self.record["phase"] in core.ACTIVE:
            raise FoundationError(ErrorCode.BUSY, f"rollout {self.record['id']} is in progress: wait, or abort it")
        tree = self.app.tree
        try:
            targets = core.select(tree.snapshot(), args.get("supervisor"), args.get("children"))
            specs = {n: node.spec for n in targets if isinstance(node := tree.find_quiet(n), Worker)}
            to = {"agent": args.get("agent"), "env": dict(args.get("env") or {})}
            ident = str(args.get("id") or f"rollout-{int(self.wall())}")
            record = core.start(ident, targets, specs, to, percent=float(args.get("canary", 10)),
                                hold=float(args.get("hold", 300)), interval=float(args.get("interval", 5)),
                                window=float(args.get("window", 60)), now=self.wall(), by=by,
                                stages=[float(p) for p in args.get("stages") or []])
        except (ValueError, TypeError) as exc:
            raise FoundationError(ErrorCode.BAD_REQUEST, str(exc)) from None
        self.record = record
        self.ticks = 0
        for data in (self.samples, self.canary, self.rest):
            data.clear()
            data.keep = max(record["window"], 60.0) + 2 * record["interval"]
        broker = self.app.broker
        if broker is not None and broker.latencies is None:
            broker.latencies = deque(maxlen=100_000)
        self._sample()
        self.before = {}
        self._save()
        self.app.obs.publish("rollout", id=ident, step=record["history"][0]["step"], names=record["canary"], to=to,
                             by=by)
        log.info("rollout %s: canary %s to %s", ident, ", ".join(record["canary"]), to)
        self._replace(record["canary"], forward=True)
        self._arm()
        return self.status()

    def resume(self, ident: str | None, by: str) -> dict[str, Any]:
        """``rollout resume NAME``: a paused rollout goes on (its stage is taken as judged)."""
        record = self.record
        if record is None or record["phase"] not in core.ACTIVE:
            raise FoundationError(ErrorCode.NOT_READY, "no rollout in progress")
        if ident and ident != record["id"]:
            raise FoundationError(ErrorCode.BAD_REQUEST, f"the rollout in progress is {record['id']}, not {ident}")
        try:
            self.record = core.resume(record, self.wall(), by)
        except ValueError as exc:
            raise FoundationError(ErrorCode.NOT_READY, str(exc)) from None
        self._save()
        self.app.obs.publish("rollout", id=record["id"], step="resumed", names=[], to=record["to"], by=by)
        log.info("rollout %s: resumed by %s", record["id"], by)
        return self.status()

    def abort(self, by: str, reason: str | None) -> dict[str, Any]:
        record = self.record
        if record is None or record["phase"] not in core.ACTIVE:
            raise FoundationError(ErrorCode.NOT_READY, "no rollout in progress")
        self._roll_back(by, reason or "aborted", aborted=True)
        return self.status()

    def status(self) -> dict[str, Any]:
        record = self.record
        if record is None:
            return {"rollout": None}
        out = dict(record)
        out["held_s"] = core.held(record, self.wall())
        out["ticks"] = self.ticks
        out["baseline"] = self.base or None  # the p50 latency of the window before the current stage
        if record["phase"] in core.ACTIVE:
            now = self._sample()
            verdict = self._judge(now)
            out["gates"] = verdict.to_dict()
            out["crashed"] = self._crashed()
        return {"rollout": out}

    # ---- the gates ----

    def _arm(self) -> None:
        if self._timer is None and self.record is not None and self.record["phase"] in core.ACTIVE:
            self._timer = self.app.loop.call_later(self.record["interval"], self._tick)

    def _tick(self) -> None:
        self._timer = None
        record = self.record
        if record is None or record["phase"] not in core.ACTIVE:
            return
        now = self._sample()
        self.ticks += 1
        failures = self._crashed()
        verdict = self._judge(now)
        if record["applied"]:
            failures += list(verdict.failed)
        short = core.too_few(verdict.figures, self.limits) if record["applied"] else []
        decision = core.decide(record, self.wall(), failures, short)
        self.app.obs.publish("gate", source="rollout", id=record["id"], tick=self.ticks, stage=record.get("stage", 0),
                             phase=record["phase"], applied=record["applied"], decision=decision.kind,
                             **({"reason": decision.reason} if decision.reason else {}), **verdict.to_dict())
        if decision.kind == "pause":
            self.record = core.pause(record, self.wall(), decision.reason)
            self._save()
            self.app.obs.publish("rollout", id=record["id"], step="paused", names=[], to=record["to"],
                                 by="rollout", reason=decision.reason)
            log.warning("rollout %s paused: %s (rollout resume %s, or abort)", record["id"], decision.reason,
                        record["id"])
        elif decision.kind == "rollback":
            self.app.obs.publish("alert", severity="critical", source="rollout",
                                 message=f"rollout {record['id']} is unhealthy: {decision.reason}",
                                 figures=verdict.figures)
            self._roll_back("health gates", decision.reason, aborted=False)
            return
        if decision.kind == "advance":
            self.record = core.advance(record, decision.names, self.wall(), "rollout")
            for data in (self.canary, self.rest):  # other members from now on: their sums jump
                data.clear()
            self._save()
            step = self.record["history"][-1]
            self.app.obs.publish("rollout", id=record["id"], step=step["step"], names=list(decision.names),
                                 percent=step["percent"], to=record["to"], by="rollout")
            log.info("rollout %s: held; now %s%% (%s)", record["id"], f"{step['percent']:g}",
                     ", ".join(decision.names) or "no one more")
            self._replace(list(decision.names), forward=True)
        elif decision.kind == "finish":
            self.record = core.finish(record, self.wall())
            self._save()
            self.app.obs.publish("rollout", id=record["id"], step="done", names=record["targets"],
                                 to=record["to"], by="rollout")
            log.info("rollout %s: done", record["id"])
            return
        self._arm()

    def _sample(self) -> float:
        # The latency samples are the migration's while one is configured (both would clear them).
        now = take_sample(self.app, self.samples, latencies=self.app.flags.migrations.spec is None)
        record, broker = self.record, self.app.broker
        by_agent: dict[str, list[int]] = broker.by_agent if broker is not None else {}
        if record is not None:
            changed = set(record["changed"])
            for data, names in ((self.canary, changed), (self.rest, set(record["targets"]) - changed)):
                counts = [by_agent.get(name, [0, 0]) for name in names]
                data.add(Sample(now, done=sum(c[0] for c in counts), failed=sum(c[1] for c in counts)))
        return now

    def _judge(self, now: float) -> Verdict:
        """The migration's rules over the window, with the error rate the changed children's own (a 10 % canary
        failing 20 % of its messages is 2 % of the pool's); the rest's beside it, for comparison."""
        assert self.record is not None
        window = self.record["window"]
        fig = figures(self.samples, now, window, self.entered)
        mine, rest = figures(self.canary, now, window, self.entered), figures(self.rest, now, window, self.entered)
        fig.update(messages=mine["messages"], error_rate=mine["error_rate"], pool_messages=fig["messages"],
                   pool_error_rate=fig["error_rate"], rest_messages=rest["messages"],
                   rest_error_rate=rest["error_rate"])
        return judge(fig, self.base.get("p50_latency"), self.limits)

    def _crashed(self) -> list[str]:
        observed = {}
        for name in self.before:
            node = self.app.tree.find_quiet(name)
            if isinstance(node, Worker):
                observed[name] = {"restarts": node.restarts, "state": str(node.state)}
        return core.crashed(self.before, observed)

    # ---- changing the tree ----

    def _replace(self, names: list[str], forward: bool, track: bool = True) -> None:
        """Restart ``names`` with the new (or their previous) spec through the plan runner, as reload does."""
        record = self.record
        assert record is not None
        tree = self.app.tree
        steps: list[plans.Step] = []
        for name in names:
            node = tree.find_quiet(name)
            if not isinstance(node, Worker):
                continue
            spec: WorkerSpec = (core.forward(node.spec, record["to"]) if forward
                                else core.backward(node.spec, record["previous"][name]))
            if spec != node.spec:
                steps.append(plans.Replace(spec))
            if forward and track:
                self.before[name] = node.restarts
        self.generation += 1
        generation = self.generation
        if forward and track:
            self.base = baseline(self.samples, self.app.loop.clock(), record["window"], 0.0,
                                 self.limits.min_messages)
        runner = PlanRunner(tree, self.app.apply, self.app.waiters)
        runner.run([tuple(steps)] if steps else [], lambda err: self._settled(generation, forward, err))

    def _settled(self, generation: int, forward: bool, err: FoundationError | None) -> None:
        record = self.record
        if generation != self.generation or record is None:
            return
        if err is not None:
            log.error("rollout %s: the change stopped part-way: %s", record["id"], err)
            if forward and record["phase"] in core.ACTIVE:
                self._roll_back("rollout", f"could not apply: {err.message}", aborted=False)
            return
        if forward and record["phase"] in core.ACTIVE:
            self.record = core.applied(record, self.wall())
            self.entered = self.app.loop.clock()
            self._save()
            log.info("rollout %s: %s applied; holding %gs", record["id"], record["phase"], record["hold"])

    def _roll_back(self, by: str, reason: str, aborted: bool) -> None:
        record = self.record
        assert record is not None
        self.record = core.roll_back(record, self.wall(), by, reason, aborted)
        self._save()
        self.before = {}
        self.app.obs.publish("rollback", rollout=record["id"], names=record["changed"], by=by, reason=reason,
                             automatic=not aborted, phase=record["phase"])
        if aborted:
            self.app.obs.publish("alert", severity="warning", source="rollout",
                                 message=f"rollout {record['id']} aborted: {reason}", figures={})
        log.warning("rollout %s %s: %s; restoring %s", record["id"], "aborted" if aborted else "rolled back",
                    reason, ", ".join(record["changed"]))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._replace(record["changed"], forward=False)

    def _save(self) -> None:
        if self.store is not None and self.record is not None:
            try:
                self.store.save(self.record)
            except lmdb.Error as exc:
                log.error("rollouts: could not persist: %s", exc)  # noqa: TRY400
