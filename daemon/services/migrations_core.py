"""A staged migration as data (DESIGN 3.8): named stages, each a set of flag values, and the rules for moving.

    [migration] config ──parse──> MigrationSpec: stage 0 "baseline" (every flag a stage names: off), stage 1..N
    Position {stage, since, baselines} ──next (ready?) / rollback / emergency──> Step ──> flag values, events, log

Stages are cumulative: stage k's values are stage 1..k's tables merged, later ones winning, over stage 0's. So
rolling back one stage restores exactly the values stage k-1 had, and stage 0 turns everything the migration
touches off. A stage may also carry a state migration of named agents (``state = {agents, forward, reverse}``,
ipc/state_migration.py): at stage k an agent should have the state migrations of stages 1..k that name it, so a
rollback undoes them too. ``migrate next`` is allowed when the current stage has held for its ``hold`` seconds and
its gates are not failed (daemon/services/migrations_health.py); rollbacks are always allowed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from daemon.core.spec import ChildSpec, SupervisorSpec
from ipc.flags import check_name, parse_value
from ipc.state_migration import check_ref, wanted

STAGE_KEYS = ("name", "flags", "hold", "state", "requires")
STATE_KEYS = ("agents", "forward", "reverse")
MIGRATION_KEYS = ("stages", "hold", "window", "interval", "auto_rollback")
BASELINE = "baseline"


class SpecError(ValueError):
    """An invalid ``[flags]`` or ``[migration]``: the dotted key and what is wrong (config.py makes it a
    ConfigError)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message


@dataclass(frozen=True)
class StateChange:
    """A stage's agent-state migration: ``forward`` and ``reverse`` are ``module:function`` over the state."""

    agents: tuple[str, ...]
    forward: str
    reverse: str


@dataclass(frozen=True)
class Stage:
    name: str
    flags: tuple[tuple[str, Any], ...]
    hold: float
    state: StateChange | None = None
    requires: tuple[str, ...] = ()  # workers that must be running before the stage is entered (its own checks)

    def needs(self) -> tuple[str, ...]:
        """What must run before this stage is entered: ``requires``, and the agents its state migration names."""
        return tuple(dict.fromkeys((*self.requires, *(self.state.agents if self.state else ()))))


@dataclass(frozen=True)
class MigrationSpec:
    stages: tuple[Stage, ...]  # stage 1..N (stage 0 is implicit)
    window: float = 60.0  # seconds of health data the gates judge
    interval: float = 5.0  # seconds between gate checks while a stage > 0 is on
    auto_rollback: bool = True

    @property
    def last(self) -> int:
        return len(self.stages)

    def name(self, index: int) -> str:
        return BASELINE if index == 0 else self.stages[index - 1].name

    def hold(self, index: int) -> float:
        return 0.0 if index == 0 else self.stages[index - 1].hold

    def stage0(self) -> dict[str, Any]:
        return {name: "off" for stage in self.stages for name, _ in stage.flags}

    def values(self, index: int) -> dict[str, Any]:
        """Every flag the migration touches, as stage ``index`` has it."""
        out = self.stage0()
        for stage in self.stages[:index]:
            out.update(stage.flags)
        return out

    def describe(self) -> list[dict[str, Any]]:
        return [{"index": i, "name": self.name(i), "hold": self.hold(i), "flags": self.values(i),
                 **({"state": dataclasses.asdict(st)} if i and (st := self.stages[i - 1].state) else {})}
                for i in range(self.last + 1)]

    def state_agents(self) -> list[str]:
        """Every agent a state migration names, in the order first named."""
        return list(dict.fromkeys(n for stage in self.stages if stage.state for n in stage.state.agents))

    def state_wanted(self, name: str, index: int) -> list[dict[str, str]]:
        """The state migrations agent ``name`` has at stage ``index`` (ipc/state_migration.py's ``wanted``)."""
        return wanted([(s.name, s.state.agents, s.state.forward, s.state.reverse) if s.state else None
                       for s in self.stages], name, index)


def parse_flags(value: object) -> tuple[tuple[str, Any], ...]:
    """``[flags] name = on | off | true | false | PERCENT``."""
    if not isinstance(value, dict):
        raise SpecError("flags", f"expected a table, got {type(value).__name__}")
    return tuple((_flag_name(name, f"flags.{name}"), _flag_value(v, f"flags.{name}")) for name, v in value.items())


def parse_migration(value: object) -> MigrationSpec:
    table = _table(value, "migration", MIGRATION_KEYS)
    hold = _seconds(table.get("hold", 300.0), "migration.hold", zero=True)
    stages_value = table.get("stages")
    if not isinstance(stages_value, list) or not stages_value:
        raise SpecError("migration.stages", "missing: one [[migration.stages]] table per stage, in order")
    stages: list[Stage] = []
    for i, raw in enumerate(stages_value):
        key = f"migration.stages[{i}]"
        item = _table(raw, key, STAGE_KEYS)
        name = item.get("name")
        if not isinstance(name, str) or not name or name == BASELINE:
            raise SpecError(f"{key}.name", f"a non-empty name other than {BASELINE!r} (stage 0)")
        if name in {s.name for s in stages}:
            raise SpecError(f"{key}.name", f"{name!r} is used by an earlier stage")
        flags = _table(item.get("flags", {}), f"{key}.flags", None)
        state = _state(item["state"], f"{key}.state") if "state" in item else None
        if not flags and state is None:
            raise SpecError(f"{key}.flags", "missing: the flag values of this stage, e.g. { registry = \"on\" } "
                            "(or a state migration)")
        values = tuple((_flag_name(n, f"{key}.flags.{n}"), _flag_value(v, f"{key}.flags.{n}"))
                       for n, v in flags.items())
        requires = item.get("requires", [])
        if not isinstance(requires, list) or not all(isinstance(r, str) and r for r in requires):
            raise SpecError(f"{key}.requires", f"expected a list of worker names, got {requires!r}")
        stages.append(Stage(name, values, _seconds(item.get("hold", hold), f"{key}.hold", zero=True), state,
                            tuple(requires)))
    auto = table.get("auto_rollback", True)
    if not isinstance(auto, bool):
        raise SpecError("migration.auto_rollback", f"expected a boolean, got {auto!r}")
    return MigrationSpec(tuple(stages), window=_seconds(table.get("window", 60.0), "migration.window"),
                         interval=_seconds(table.get("interval", 5.0), "migration.interval"), auto_rollback=auto)


def _state(value: object, key: str) -> StateChange:
    """``state = { agents = ["a", ...], forward = "module:function", reverse = "module:function" }``."""
    table = _table(value, key, STATE_KEYS)
    agents = table.get("agents")
    if (not isinstance(agents, list) or not agents or not all(isinstance(a, str) and a for a in agents)
            or len(set(agents)) != len(agents)):
        raise SpecError(f"{key}.agents", f"expected a list of agent names, each once, got {agents!r}")
    refs = []
    for field in ("forward", "reverse"):
        if field not in table:
            raise SpecError(f"{key}.{field}", "missing: a 'module:function' over the agent's state (every state "
                            "migration has its reverse, so a rollback brings the state back)")
        try:
            refs.append(check_ref(table[field]))
        except ValueError as exc:
            raise SpecError(f"{key}.{field}", str(exc)) from None
    return StateChange(tuple(agents), refs[0], refs[1])


def check_state_agents(spec: MigrationSpec, root: ChildSpec) -> None:
    """Every agent a state migration names is an agent of the config's tree, every child a stage requires a worker
    of it (SpecError naming the key)."""
    agents: set[str] = set()
    names: set[str] = set()
    todo: list[ChildSpec] = [root]
    while todo:
        node = todo.pop()
        if isinstance(node, SupervisorSpec):
            todo.extend(node.children)
            continue
        names.add(node.name)
        if node.agent:
            agents.add(node.name)
    for i, stage in enumerate(spec.stages):
        for name in stage.requires:
            if name not in names:
                raise SpecError(f"migration.stages[{i}].requires", f"{name!r} is not a worker of the tree")
        for name in stage.state.agents if stage.state else ():
            if name not in agents:
                raise SpecError(f"migration.stages[{i}].state.agents", f"{name!r} is not an agent of the tree")


def _table(value: object, key: str, allowed: tuple[str, ...] | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError(key, f"expected a table, got {type(value).__name__}")
    for name in value:
        if allowed is not None and name not in allowed:
            raise SpecError(f"{key}.{name}", f"unknown key (expected one of {', '.join(allowed)})")
    return value


def _flag_name(name: str, key: str) -> str:
    try:
        return check_name(name)
    except ValueError as exc:
        raise SpecError(key, str(exc)) from None


def _flag_value(value: object, key: str) -> Any:
    try:
        kind, percent = parse_value(value)
    except ValueError as exc:
        raise SpecError(key, str(exc)) from None
    return ("on" if percent else "off") if kind == "boolean" else percent


def _seconds(value: object, key: str, zero: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not zero):  # type: ignore[operator]
        raise SpecError(key, f"expected a number of seconds {'>= 0' if zero else '> 0'}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


# ---- moving ----


@dataclass(frozen=True)
class Step:
    """A move decided: from ``origin`` to ``to``, and what to record."""

    action: str  # next | rollback | auto_rollback | emergency_rollback
    origin: int
    to: int
    values: dict[str, Any]
    reason: str | None = None


def position(stored: Mapping[str, Any] | None, spec: MigrationSpec) -> dict[str, Any]:
    """The stored position, clamped to the stages the config has now (a stage removed from the config is left)."""
    pos = dict(stored or {"stage": 0, "since": None, "baselines": {}})
    pos["stage"] = min(int(pos.get("stage", 0)), spec.last)
    pos.setdefault("baselines", {})
    return pos


def readiness(spec: MigrationSpec, pos: Mapping[str, Any], now: float, verdict: Mapping[str, Any] | None,
              running: Collection[str] | None = None) -> list[str]:
    """Why ``migrate next`` may not go now (empty: it may): the current stage has not held for its hold time, or
    one of its gates failed, or (given ``running``, the children running now) the next stage's own checks: a child
    it requires, or an agent its state migration names, is not running."""
    stage = int(pos["stage"])
    if stage >= spec.last:
        return [f"already at the last stage ({spec.name(stage)})"]
    blockers = []
    since = pos.get("since")
    hold = spec.hold(stage)
    if stage > 0 and hold > 0 and (since is None or now - since < hold):
        held = 0.0 if since is None else now - since
        blockers.append(f"stage {spec.name(stage)} has held {held:.0f}s of its {hold:g}s")
    if stage > 0 and verdict is not None and verdict.get("outcome") == "failed":
        blockers.extend(f"gate failed: {why}" for why in verdict.get("failed", ()))
    if running is not None:
        blockers.extend(f"stage {spec.name(stage + 1)} needs {name} running" for name in spec.stages[stage].needs()
                        if name not in running)
    return blockers


def plan(spec: MigrationSpec, stage: int, action: str, reason: str | None = None) -> Step:
    """The step ``action`` makes from ``stage`` (ValueError when there is nowhere to go)."""
    if action == "next":
        if stage >= spec.last:
            raise ValueError(f"already at the last stage ({spec.name(stage)})")
        to = stage + 1
    elif action in ("rollback", "auto_rollback"):
        if stage == 0:
            raise ValueError("already at stage 0 (baseline)")
        to = stage - 1
    elif action == "emergency_rollback":
        to = 0
    else:
        raise ValueError(f"unknown action {action!r}")
    return Step(action, stage, to, spec.values(to), reason)
