"""Rollouts of agent versions (DESIGN 3.8), as pure functions of plain data and an injected clock.

    rollout start ──> start(): targets, canary share (at least one), the version, what each target had
        phase "canary" ──> the shell replaces the canary's specs ──> applied ──> hold, gates judged every interval
        decide(): "advance" ──> phase "all": the rest replaced ──> applied ──> hold ──> "finish" ──> phase "done"
                  "rollback" (a gate failed, a changed child crashed) ──> every changed child gets its old spec back
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

ACTIVE = ("canary", "all")
PHASES = ("canary", "all", "done", "rolled_back", "aborted")


@dataclass(frozen=True)
class Decision:
    kind: str  # wait | advance | finish | rollback
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


def start(ident: str, targets: list[str], specs: dict[str, WorkerSpec], to: dict[str, Any], *, percent: float,
          hold: float, interval: float, window: float, now: float, by: str) -> dict[str, Any]:
    """A new rollout's record; ValueError when it cannot go."""
    if not targets:
        raise ValueError("no targets")
    if not 0 < percent <= 100:
        raise ValueError("the canary share must be a percentage above 0, at most 100")
    if hold < 0 or interval <= 0 or window <= 0:
        raise ValueError("hold must be >= 0, interval and window > 0")
    check_version(to, specs)
    canary = targets[:canary_size(len(targets), percent)]
    return {"id": ident, "targets": targets, "canary": canary, "to": to, "percent": percent, "hold": hold,
            "interval": interval, "window": window,
            "previous": {name: version_of(specs[name]) for name in targets},
            "phase": "canary", "changed": list(canary), "applied": False, "since": None, "started": now, "by": by,
            "reason": None, "ended": None,
            "history": [{"ts": now, "step": "canary", "names": list(canary), "by": by}]}


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


def decide(record: dict[str, Any], now: float, failures: list[str]) -> Decision:
    """What to do next, given the gates' failures (health rules and crashed changed children)."""
    phase = record["phase"]
    if phase not in ACTIVE:
        return Decision("wait")
    if failures:
        return Decision("rollback", tuple(record["changed"]), "; ".join(failures))
    if not record["applied"] or record["since"] is None or now - record["since"] < record["hold"]:
        return Decision("wait")
    if phase == "canary":
        rest = tuple(n for n in record["targets"] if n not in record["changed"])
        return Decision("advance", rest) if rest else Decision("finish")
    return Decision("finish")


def advance(record: dict[str, Any], names: tuple[str, ...], now: float, by: str) -> dict[str, Any]:
    history = [*record["history"], {"ts": now, "step": "all", "names": list(names), "by": by}]
    return {**record, "phase": "all", "changed": [*record["changed"], *names], "applied": False, "since": None,
            "history": history}


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
