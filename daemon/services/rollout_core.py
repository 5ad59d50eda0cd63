"""Rollouts of agent versions (DESIGN 3.8), as pure functions of plain data and an injected clock.

    rollout start ──> start(): targets, canary share (at least one), the version, what each target had
        phase "canary" ──> the shell replaces the canary's specs ──> applied ──> hold, gates judged every interval
        decide(): "advance" ──> phase "all": the rest replaced ──> applied ──> hold ──> "finish" ──> phase "done"
                  "rollback" (a gate failed, a changed child crashed) ──> every changed child gets its old spec back
                  "pause" (the hold is over, but the stage's sample is below the minimum: inconclusive)
                      ──> phase "paused" ──> rollout resume (the operator accepts it: on to the next stage) | abort
                      (a failed gate still rolls a paused rollout back)
    rollout abort ──> the same rollback, phase "aborted"

A *version* is ``{"agent": "module:Class" | None, "env": {NAME: VALUE}}``: the agent class to run (None: keep it) and
environment entries set on top of the child's own. The record (a plain dict, stored as JSON) keeps what each
target ran before (``previous``: its agent and whole env), so a rollback restores exactly that, even after the
daemon restarted from a config that never knew the rollout.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from daemon.core.spec import WorkerSpec
from daemon.services.migrations_health import Thresholds

MOVING = ("canary", "all")  # "canary": a stage below 100 %
ACTIVE = (*MOVING, "paused")  # in progress: judged, abortable, applied again after a daemon restart
PHASES = (*ACTIVE, "done", "rolled_back", "aborted")


@dataclass(frozen=True)
class Decision:
    kind: str  # wait | advance | finish | rollback | pause
    names: tuple[str, ...] = ()  # the children to change (advance) or restore (rollback)
    reason: str = ""


def select(tree: dict[str, Any], supervisor: str | None, children: list[str] | None) -> list[str]:
    """The target workers, in tree order: every worker directly under ``supervisor``, or the named ``children``.
    ``tree`` is a ``status`` snapshot. ValueError names what is wrong."""
    workers: dict[str, dict[str, Any]] = {}
    sups: dict[str, dict[str, Any]] = {}

    def walk(node: dict[str, Any]) -> None:
        (sups if node.get("type") == "supervisor" else workers)[node["name"]] = node
        for child in node.get("children", []):
            walk(child)

    walk(tree)
    if (supervisor is None) == (not children):
        raise ValueError("name either a supervisor or children")
    if supervisor is not None:
        if supervisor not in sups:
            raise ValueError(f"no supervisor named {supervisor!r}")
        names = [c["name"] for c in sups[supervisor].get("children", []) if c.get("type") != "supervisor"]
        if not names:
            raise ValueError(f"supervisor {supervisor!r} has no workers")
        return names
    assert children is not None
    for name in children:
        if name not in workers:
            raise ValueError(f"no worker named {name!r}")
    if len(set(children)) != len(children):
        raise ValueError("a child is named twice")
    return list(children)


def canary_size(count: int, percent: float) -> int:
    """The canary's share of ``count`` targets: ``percent`` of them rounded up, at least one, at most all."""
    return min(count, max(1, math.ceil(count * percent / 100)))


def version_of(spec: WorkerSpec) -> dict[str, Any]:
    return {"agent": spec.agent, "env": dict(spec.env)}


def forward(spec: WorkerSpec, to: dict[str, Any]) -> WorkerSpec:
    """``spec`` at the new version."""
    env = {**dict(spec.env), **to.get("env", {})}
    return dataclasses.replace(spec, agent=to.get("agent") or spec.agent, env=tuple(env.items()))


def backward(spec: WorkerSpec, previous: dict[str, Any]) -> WorkerSpec:
    """``spec`` at what it ran before the rollout."""
    return dataclasses.replace(spec, agent=previous.get("agent"), env=tuple(previous.get("env", {}).items()))


def check_version(to: dict[str, Any], specs: dict[str, WorkerSpec]) -> None:
    if not to.get("agent") and not to.get("env"):
        raise ValueError("a version needs an agent class, an env, or both")
    agent = to.get("agent")
    if agent is not None and (not isinstance(agent, str) or agent.count(":") != 1 or agent.startswith(":")
                              or agent.endswith(":")):
        raise ValueError(f"agent must be 'module:Class', got {agent!r}")
    for name, spec in specs.items():
        if agent and not spec.agent:
            raise ValueError(f"{name!r} runs a command, not an agent: only its env can change")
    if any(forward(spec, to) == spec for spec in specs.values()):
        same = [n for n, s in specs.items() if forward(s, to) == s]
        raise ValueError(f"already at that version: {', '.join(same)}")


def check_stages(stages: list[float]) -> None:
    if not stages or any(not 0 < p <= 100 for p in stages) or sorted(set(stages)) != list(stages):
        raise ValueError("stages must be rising percentages above 0, at most 100")
    if stages[-1] != 100:
        raise ValueError("the last stage must be 100")


def start(ident: str, targets: list[str], specs: dict[str, WorkerSpec], to: dict[str, Any], *, percent: float,
          hold: float, interval: float, window: float, now: float, by: str,
          stages: list[float] | None = None) -> dict[str, Any]:
    """A new rollout's record; ValueError when it cannot go. ``stages`` (rising percentages ending at 100) replaces
    the default ``[percent, 100]``: the canary, then all."""
    if not targets:
        raise ValueError("no targets")
    stages = list(stages) if stages else [percent, 100.0] if percent < 100 else [100.0]
    check_stages(stages)
    percent = stages[0]
    if hold < 0 or interval <= 0 or window <= 0:
        raise ValueError("hold must be >= 0, interval and window > 0")
    check_version(to, specs)
    canary = targets[:canary_size(len(targets), percent)]
    return {"id": ident, "targets": targets, "canary": canary, "to": to, "percent": percent, "stages": stages,
            "stage": 0, "hold": hold,
            "interval": interval, "window": window,
            "previous": {name: version_of(specs[name]) for name in targets},
            "phase": "canary" if percent < 100 else "all", "changed": list(canary), "applied": False, "since": None,
            "started": now, "by": by, "reason": None, "ended": None,
            "history": [{"ts": now, "step": "canary" if percent < 100 else "all", "names": list(canary), "by": by,
                         "percent": percent}]}


def crashed(before: dict[str, int], observed: dict[str, dict[str, Any]]) -> list[str]:
    """A changed child that restarted since the change (a crash: an operator's restart does not count), or that is
    down, fails the rollout."""
    out = []
    for name, restarts in before.items():
        node = observed.get(name)
        if node is None:
            out.append(f"{name} is gone")
        elif node.get("restarts", 0) > restarts:
            out.append(f"{name} crashed after the change ({node['restarts'] - restarts} restarts)")
        elif node.get("state") == "failed":
            out.append(f"{name} failed")
    return out


def too_few(fig: dict[str, Any], limits: Thresholds) -> list[str]:
    """Why the stage's sample is below the minimum the gates need (empty: enough to judge). The canary's own
    messages count (``messages``: the changed children's), and the sends; the p50 latency gate, which also needs a
    baseline from before the stage, is not part of it (an idle pool before the rollout would pause every one)."""
    short = []
    if fig.get("messages", 0) < limits.min_messages:
        short.append(f"{fig.get('messages', 0)} messages handled by the changed children, "
                     f"fewer than {limits.min_messages}")
    if fig.get("sends", 0) < limits.min_sends:
        short.append(f"{fig.get('sends', 0)} sends, fewer than {limits.min_sends}")
    return short


def decide(record: dict[str, Any], now: float, failures: list[str], short: list[str] | None = None) -> Decision:
    """What to do next, given the gates' failures (health rules and crashed changed children) and, once the hold
    is over, ``short``: why the sample is too small to judge (``too_few``), which pauses the rollout unless the
    operator resumed this stage."""
    phase = record["phase"]
    if phase not in ACTIVE:
        return Decision("wait")
    if failures:
        return Decision("rollback", tuple(record["changed"]), "; ".join(failures))
    if phase == "paused":
        return Decision("wait")
    if not record["applied"] or record["since"] is None or now - record["since"] < record["hold"]:
        return Decision("wait")
    stages, stage = record.get("stages") or [record["percent"], 100.0], int(record.get("stage", 0))
    if short and record.get("accepted") != stage:
        return Decision("pause", (), "inconclusive: " + "; ".join(short))
    if stage + 1 < len(stages):
        share = record["targets"][:canary_size(len(record["targets"]), stages[stage + 1])]
        return Decision("advance", tuple(n for n in share if n not in record["changed"]))
    return Decision("finish")


def advance(record: dict[str, Any], names: tuple[str, ...], now: float, by: str) -> dict[str, Any]:
    """The next stage: ``all`` at 100 %, else still ``canary`` (a wider one)."""
    stages, stage = record.get("stages") or [record["percent"], 100.0], int(record.get("stage", 0)) + 1
    phase = "all" if stages[min(stage, len(stages) - 1)] >= 100 else "canary"
    history = [*record["history"], {"ts": now, "step": step_name(phase), "names": list(names), "by": by,
                                    "percent": stages[min(stage, len(stages) - 1)]}]
    return {**record, "phase": phase, "stage": stage, "changed": [*record["changed"], *names], "applied": False,
            "since": None, "history": history}


def pause(record: dict[str, Any], now: float, reason: str) -> dict[str, Any]:
    """The hold ended with too few data to judge: wait for an operator (``resume`` or ``abort``)."""
    history = [*record["history"], {"ts": now, "step": "paused", "names": [], "by": "rollout", "reason": reason}]
    return {**record, "phase": "paused", "paused_phase": record["phase"], "reason": reason, "history": history}


def resume(record: dict[str, Any], now: float, by: str) -> dict[str, Any]:
    """The operator accepts the paused stage as it is: it moves on at the next gate check (unless a gate fails)."""
    if record["phase"] != "paused":
        raise ValueError(f"rollout {record['id']} is {record['phase']}, not paused")
    history = [*record["history"], {"ts": now, "step": "resumed", "names": [], "by": by}]
    return {**record, "phase": record.get("paused_phase") or "canary", "accepted": int(record.get("stage", 0)),
            "reason": None, "history": history}


def step_name(phase: str) -> str:
    return "all" if phase == "all" else "stage"


def applied(record: dict[str, Any], now: float) -> dict[str, Any]:
    """The current phase's changes have settled: its hold begins."""
    return {**record, "applied": True, "since": now}


def finish(record: dict[str, Any], now: float) -> dict[str, Any]:
    return {**record, "phase": "done", "ended": now,
            "history": [*record["history"], {"ts": now, "step": "done", "names": [], "by": "rollout"}]}


def roll_back(record: dict[str, Any], now: float, by: str, reason: str, aborted: bool) -> dict[str, Any]:
    step = "aborted" if aborted else "rolled_back"
    history = [*record["history"], {"ts": now, "step": step, "names": list(record["changed"]), "by": by,
                                    "reason": reason}]
    return {**record, "phase": step, "reason": reason, "ended": now, "history": history}


def held(record: dict[str, Any], now: float) -> float | None:
    since = record.get("since")
    return round(now - since, 3) if since is not None and record["phase"] in ACTIVE else None
