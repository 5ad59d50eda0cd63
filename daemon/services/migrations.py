"""A staged migration in the daemon: its position, its gates, its steps and its automatic rollback (DESIGN 3.8).

    every ``interval`` s (only with [migration]): broker counters, its latencies, the restarts of the event stream
        ──> Samples ──> figures over the stage's window ──> judge (migrations_health.py, pure) ──> Verdict
                                                              failed and auto_rollback ──> rollback one stage
    ``migrate next`` (readiness: hold time, gates) / ``rollback`` / ``emergency-rollback REASON``
        ──> plan (migrations_core.py, pure) ──> FlagService.changed: flags + position + log, one transaction
                                                   ──> flag_changed, stage_changed | rollback (+ alert), agents

A stage's state migration (``state = {agents, forward, reverse}``): each step sets, for every agent a state migration
names, the list it should have at the new stage (``FOUNDATION_STATE_MIGRATIONS`` in its start environment,
daemon/shell/spawn_env.py) and restarts the agents whose list changed through the plan runner; the agent applies
the forward or reverse functions itself as it starts, before it handles anything (agents/runtime.py). So nothing
of the user's runs in the daemon, and a rollback (one stage, emergency, automatic, or --offline, which takes effect
as the agents start with the daemon) brings the state back with the flags. An agent that does not come back up
after a forward step fails the stage: rolled back by itself (with ``auto_rollback``).

The window never reaches back before the stage began (nor before the daemon started: samples are in memory), so a
stage is judged on its own traffic. The baseline of a stage (its p50 latency) is taken when ``migrate next`` enters
it, from the window before.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from daemon.core import plan as plans
from daemon.core.states import ALIVE, State
from daemon.core.tree import Worker
from daemon.services.migrations_core import MigrationSpec, Step, plan, position, readiness
from daemon.services.migrations_health import Sample, Samples, Thresholds, Verdict, baseline, figures, judge
from daemon.services.plan_runner import PlanRunner
from ipc.errors import ErrorCode, FoundationError

if TYPE_CHECKING:
    from daemon.services.flags import FlagService
    from daemon.shell.loop import TimerHandle

log = logging.getLogger("foundationd")

LATENCY_KEEP = 100_000
LIMITS = Thresholds()  # DESIGN 3.8's figures


class Migrations:
    def __init__(self, flags: FlagService, app: Any, wall: Callable[[], float] = time.time,
                 limits: Thresholds = LIMITS) -> None:
        self.flags, self.app, self.wall, self.limits = flags, app, wall, limits
        self.spec: MigrationSpec | None = None
        self.pos: dict[str, Any] = {"stage": 0, "since": None, "baselines": {}}
        self.samples = Samples(keep=120.0)
        self.entered = 0.0  # monotonic: when the current stage began, or sampling did
        self.verdict: Verdict | None = None
        self._timer: TimerHandle | None = None
        self._configured = False  # the first configure is at the daemon's start, before the tree boots
        self._state_generation = 0  # a restart's answer for an older step is ignored

    # ---- configuration ----

    def configure(self, spec: MigrationSpec | None, stored: dict[str, Any] | None) -> None:
        self.spec = spec
        if spec is None:
            self.close()
            if (spawn_env := getattr(self.app, "spawn_env", None)) is not None:
                spawn_env.state_migrations.clear()  # no list at all: agents leave their state as it is
            return
        self.pos = position(stored if stored is not None else self.pos, spec)
        self.samples.keep = max(spec.window, 60.0) + 2 * spec.interval
        if not self.entered:
            self.entered = self.app.loop.clock()
        broker = self.app.broker
        if broker is not None and broker.latencies is None:
            broker.latencies = deque(maxlen=LATENCY_KEEP)
        self.flags.changed([], by="config", migration=self.record())  # stage 0's values, for --offline
        changed = self._set_state_targets()
        if self._configured and changed:  # a reload changed what some agent should have: restart it
            self._restart_for_state(changed, None)
        self._configured = True
        self._arm()

    def record(self) -> dict[str, Any]:
        """What is stored: the position, and what an offline emergency rollback needs without the config."""
        assert self.spec is not None
        return {**self.pos, "stage0": self.spec.stage0(), "stages": [s["name"] for s in self.spec.describe()],
                "state_agents": self.spec.state_agents()}

    # ---- state migrations ----

    def _set_state_targets(self) -> dict[str, list[dict[str, str]]]:
        """Every state-migrated agent's list at the current stage into the spawn environment; the agents whose
        list changed (with their new list)."""
        spawn_env = getattr(self.app, "spawn_env", None)
        if self.spec is None or spawn_env is None:
            return {}
        changed = {}
        for name in self.spec.state_agents():
            want = self.spec.state_wanted(name, self.pos["stage"])
            text = orjson.dumps(want).decode()
            if spawn_env.state_migrations.get(name) != text:
                spawn_env.state_migrations[name] = text
                changed[name] = want
        return changed

    def _restart_for_state(self, changed: dict[str, list[dict[str, str]]], step: Step | None) -> None:
        """Restart the running agents in ``changed`` (they migrate their state as they start); then check they
        came back: a ``state_migrated`` event, and a failed forward step is rolled back."""
        tree = self.app.tree
        nodes = {n: node for n in changed if isinstance(node := tree.find_quiet(n), Worker)}
        running = {n for n, node in nodes.items() if node.state is State.RUNNING}
        before = {n: node.restarts for n, node in nodes.items()}
        steps = tuple(plans.Replace(node.spec) for node in nodes.values() if node.state in ALIVE)
        self._state_generation += 1
        generation, stage = self._state_generation, self.pos["stage"]

        def done(err: FoundationError | None) -> None:
            if generation != self._state_generation or self.spec is None:
                return
            failed = sorted(n for n, node in nodes.items() if n in running and (
                err is not None or node.state is not State.RUNNING or node.restarts > before[n]))
            self.app.obs.publish("state_migrated", stage=stage, name=self.spec.name(stage), agents=sorted(changed),
                                 wanted={n: [m["id"] for m in w] for n, w in changed.items()}, failed=failed,
                                 **({"error": err.message} if err is not None else {}))
            if not failed:
                return
            reason = f"state migration failed on {', '.join(failed)}"
            log.error("migration: %s (stage %s)", reason, self.spec.name(stage))
            if step is not None and step.action == "next" and self.spec.auto_rollback and self.pos["stage"] == stage:
                self.app.obs.publish("alert", severity="critical", source="migration",
                                     message=f"stage {self.spec.name(stage)}: {reason}", figures={})
                self.step(plan(self.spec, stage, "auto_rollback", reason), by="health gates")

        PlanRunner(tree, self.app.apply, self.app.waiters).run([steps] if steps else [], done)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ---- the gates ----

    def _arm(self) -> None:
        if self._timer is None and self.spec is not None:
            self._timer = self.app.loop.call_later(self.spec.interval, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self.spec is None:
            return
        now = self.sample()
        if self.pos["stage"] > 0:
            last = self.verdict.outcome if self.verdict is not None else None
            self.verdict = self.judge(now)
            rollback = self.verdict.outcome == "failed" and self.spec.auto_rollback
            if rollback or self.verdict.outcome != last:  # a change of verdict, or a decision: one event
                self._gate_event(self.verdict, "rollback" if rollback else "wait")
            if rollback:
                reason = "; ".join(self.verdict.failed)
                self.app.obs.publish("alert", severity="critical", source="migration",
                                     message=f"stage {self.spec.name(self.pos['stage'])} is unhealthy: {reason}",
                                     figures=self.verdict.figures)
                self.step(plan(self.spec, self.pos["stage"], "auto_rollback", reason), by="health gates")
        self._arm()

    def _gate_event(self, verdict: Verdict, decision: str, **extra: Any) -> None:
        """A gate decision: ``gate`` with ``source: "migration"`` (a change of verdict while a stage runs, an
        automatic rollback, ``migrate next`` allowed or refused)."""
        assert self.spec is not None
        self.app.obs.publish("gate", source="migration", stage=self.pos["stage"],
                             name=self.spec.name(self.pos["stage"]), decision=decision, **extra, **verdict.to_dict())

    def sample(self) -> float:
        """Take one sample of the counters now; returns the monotonic time."""
        return take_sample(self.app, self.samples, latencies=True)

    def judge(self, now: float) -> Verdict:
        assert self.spec is not None
        base = self.pos["baselines"].get(str(self.pos["stage"])) or {}
        return judge(figures(self.samples, now, self.spec.window, self.entered), base.get("p50_latency"),
                     self.limits)

    # ---- steps ----

    def request(self, action: str, by: str, reason: str | None = None) -> dict[str, Any]:
        """``migrate next|rollback|emergency-rollback``; FoundationError when it may not go."""
        spec = self._spec()
        stage = self.pos["stage"]
        if action == "next":
            now = self.sample()
            verdict = self.judge(now) if stage > 0 else None
            blockers = readiness(spec, self.pos, self.wall(), verdict.to_dict() if verdict else None, self._running())
            if verdict is not None:
                self._gate_event(verdict, "refused" if blockers else "next", by=by,
                                 **({"reason": "; ".join(blockers)} if blockers else {}))
            if blockers:
                raise FoundationError(ErrorCode.NOT_READY, "; ".join(blockers))
        try:
            step = plan(spec, stage, action, reason)
        except ValueError as exc:
            raise FoundationError(ErrorCode.NOT_READY, str(exc)) from None
        self.step(step, by)
        return self.status()

    def step(self, step: Step, by: str) -> None:
        spec = self._spec()
        now = self.app.loop.clock()
        if step.action == "next":
            self.pos["baselines"][str(step.to)] = baseline(self.samples, now, spec.window, self.entered,
                                                           self.limits.min_messages)
        changes = self.flags.core.apply(step.values)
        self.pos.update(stage=step.to, since=self.wall())
        self.entered, self.verdict = now, None
        state = self._set_state_targets()
        record = {"ts": self.wall(), "action": step.action, "from": spec.name(step.origin), "to": spec.name(step.to),
                  "from_index": step.origin, "to_index": step.to, "by": by, "reason": step.reason,
                  **({"state": {n: [m["id"] for m in w] for n, w in state.items()}} if state else {})}
        self.flags.changed(changes, by=f"migration {step.action}", reason=step.reason, migration=self.record(),
                           record=record)
        fields = {"from": record["from"], "to": record["to"], "stage": step.to, "by": by,
                  **({"reason": step.reason} if step.reason else {})}
        if step.action == "next":
            self.app.obs.publish("stage_changed", **fields)
        else:
            self.app.obs.publish("rollback", **fields, automatic=step.action == "auto_rollback",
                                 emergency=step.action == "emergency_rollback")
        if state:
            self._restart_for_state(state, step)

    def _running(self) -> set[str]:
        return {node.name for node in self.app.tree.workers() if node.state is State.RUNNING}

    def _spec(self) -> MigrationSpec:
        if self.spec is None:
            raise FoundationError(ErrorCode.NOT_READY, "no [migration] in the config")
        return self.spec

    # ---- reading ----

    def brief(self) -> dict[str, Any] | None:
        if self.spec is None:
            return None
        return {"stage": self.pos["stage"], "name": self.spec.name(self.pos["stage"]), "last": self.spec.last}

    def status(self) -> dict[str, Any]:
        spec = self._spec()
        now = self.sample()
        stage = self.pos["stage"]
        verdict = self.judge(now) if stage > 0 else None
        blockers = readiness(spec, self.pos, self.wall(), verdict.to_dict() if verdict else None, self._running())
        since = self.pos.get("since")
        store = self.flags.store
        return {
            "stage": stage, "name": spec.name(stage), "since": since,
            "held_s": round(self.wall() - since, 3) if since is not None else None, "hold": spec.hold(stage),
            "ready": not blockers, "blockers": blockers,
            "gates": verdict.to_dict() if verdict else None,
            "baseline": self.pos["baselines"].get(str(stage)),
            "auto_rollback": spec.auto_rollback, "window": spec.window, "interval": spec.interval,
            "stages": spec.describe(), "history": store.log(20) if store is not None else [],
        }


def offline_emergency_rollback(state_dir: Path, reason: str, by: str) -> dict[str, Any]:
    """``migrate emergency-rollback --offline``: stage 0's values straight into the store while the daemon is down
    (it loads them at its next start; agents get them in their welcome)."""
    from daemon.services.flags_core import FlagSet  # noqa: PLC0415
    from daemon.services.flags_store import FlagStore, flags_path  # noqa: PLC0415

    path = flags_path(state_dir)
    if not (path / "data.mdb").exists():
        raise FoundationError(ErrorCode.NOT_READY, f"no flags store in {state_dir} (is --state-dir right?)")
    store = FlagStore(path)
    try:
        table, migration = store.load()
        if migration is None:
            raise FoundationError(ErrorCode.NOT_READY, f"no migration recorded in {state_dir}")
        flags = FlagSet(table.get("flags", {}), int(table.get("version", 0)))
        changes = flags.apply(migration.get("stage0", {}))
        names = migration.get("stages") or ["baseline"]
        origin = int(migration.get("stage", 0))
        record = {"ts": time.time(), "action": "emergency_rollback", "from": names[min(origin, len(names) - 1)],
                  "to": names[0], "from_index": origin, "to_index": 0, "by": by, "reason": reason, "offline": True}
        agents = migration.get("state_agents") or []
        if agents:  # each takes stage 0's list (none) as it starts with the daemon, and reverses what it has
            record["state"] = {name: [] for name in agents}
        migration.update(stage=0, since=time.time())
        store.save(flags.table(), migration, [record])
        return {**record, "changed": [c.name for c in changes]}
    finally:
        store.close()


def take_sample(app: Any, samples: Samples, *, latencies: bool) -> float:
    """One sample of the broker's counters and the restart count into ``samples`` (the health gates' input, for
    migrations and rollouts alike); with ``latencies`` it also takes (and clears) the broker's latency samples, which
    only one consumer may have. Returns the monotonic time of the sample."""
    now = float(app.loop.clock())
    broker, counts = app.broker, app.obs.stream.counts
    c = broker.counters if broker is not None else {}
    taken: list[tuple[float, float]] = []
    if latencies and broker is not None and broker.latencies:
        taken = list(broker.latencies)
        broker.latencies.clear()
    starts = getattr(app.flags, "agent_starts", (0, 0))
    samples.add(Sample(now, c.get("done", 0), c.get("failed", 0), c.get("accepted", 0), c.get("rejected", 0),
                       counts.get("child_restarted", 0), starts[0], starts[1]), taken)
    return now
