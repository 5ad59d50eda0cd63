"""State migrations of agents (DESIGN 3.8, issue 15 item 4): what a migration stage asks of an agent's persisted
state, and how an agent gets there from what it has, as pure functions of plain data.

    [[migration.stages]] state = {agents, forward, reverse}        (daemon/services/migrations_core.py)
        ──> wanted(stages, name, k): the state migrations of stages 1..k that name this agent, in order
        ──> the daemon puts them in the agent's environment (ENV, JSON) and restarts it through the plan runner
    agent start (agents/runtime.py), before init/mount, with nothing handled yet:
        applied = store.migrations()   (kept in the agent's LMDB store, beside its state)
        plan(applied, wanted) ──> [reverse of each applied one not wanted, newest first] + [forward of each new one]
        run(state, steps, load) ──> the new state and the new applied list ──> one commit (state, last_seq, applied)

A migration is ``{"id": STAGE NAME, "forward": "module:function", "reverse": "module:function"}``; each function
takes the state (a JSON value, a dict for most agents) and returns the new one, and runs in the agent's process,
never in the daemon. The reverse is recorded with the forward when it is applied, so a rollback undoes exactly
what was done, even if the config changed since. No ENV at all leaves the state alone (an agent no migration
names, or a daemon with no [migration]); ``[]`` undoes everything applied (stage 0).

Expand, then contract: a stage that *expands* the state (adds the new shape beside the old, so the old code and the
new both work) and a later one that *contracts* it (drops the old shape, once nothing reads it), each with its
reverse, so any rollback, one stage or all, brings the state back with the code.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Sequence
from typing import Any

import orjson

ENV = "FOUNDATION_STATE_MIGRATIONS"
FIELDS = ("id", "forward", "reverse")

Migration = dict[str, str]
Step = tuple[str, Migration]  # ("forward" | "reverse", migration)


def check_ref(ref: object) -> str:
    """``module:function``; ValueError naming what is wrong."""
    if not isinstance(ref, str) or ref.count(":") != 1 or ref.startswith(":") or ref.endswith(":"):
        raise ValueError(f"expected 'module:function', got {ref!r}")
    return ref


def wanted(stages: Sequence[tuple[str, Sequence[str], str, str] | None], name: str, upto: int) -> list[Migration]:
    """The migrations agent ``name`` should have at stage ``upto``: those of stages 1..upto that name it.
    ``stages[i]`` is stage i+1's ``(id, agents, forward, reverse)``, or None when it carries no state migration."""
    out = []
    for item in stages[:upto]:
        if item is not None and name in item[1]:
            out.append({"id": item[0], "forward": item[2], "reverse": item[3]})
    return out


def plan(applied: Sequence[Migration], want: Sequence[Migration]) -> list[Step]:
    """From ``applied`` to ``want``: keep the longest common prefix (same id and forward), undo the rest of
    ``applied`` newest first, then apply the rest of ``want`` in order."""
    keep = 0
    while (keep < len(applied) and keep < len(want) and applied[keep].get("id") == want[keep]["id"]
           and applied[keep].get("forward") == want[keep]["forward"]):
        keep += 1
    return ([("reverse", dict(m)) for m in reversed(applied[keep:])]
            + [("forward", dict(m)) for m in want[keep:]])


def load_function(ref: str) -> Callable[[Any], Any]:
    """Import ``module:function`` (in the agent's process)."""
    module, _, attr = check_ref(ref).partition(":")
    fn = getattr(importlib.import_module(module), attr, None)
    if not callable(fn):
        raise TypeError(f"{ref}: {attr!r} is not a function of {module}")
    return fn  # type: ignore[no-any-return]


def run(state: Any, applied: Sequence[Migration], steps: Sequence[Step],
        load: Callable[[str], Callable[[Any], Any]] = load_function) -> tuple[Any, list[Migration]]:
    """Apply ``steps`` to ``state`` (each function gets its own copy); the new state and the applied list after
    them. Whatever a function raises comes out (nothing is committed by the caller then)."""
    done = [dict(m) for m in applied]
    for direction, migration in steps:
        state = load(migration[direction])(copy.deepcopy(state))
        if direction == "forward":
            done.append(dict(migration))
        else:
            done = done[:-1] if done and done[-1]["id"] == migration["id"] else [
                m for m in done if m["id"] != migration["id"]]
    return state, done


def parse_env(text: str) -> list[Migration]:
    """ENV's value: a JSON list of migrations; ValueError when it is not."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{ENV} is not JSON: {exc}") from None
    if not isinstance(value, list) or not all(isinstance(m, dict) and all(isinstance(m.get(f), str) for f in FIELDS)
                                              for m in value):
        raise ValueError(f"{ENV} must be a list of {{id, forward, reverse}}")
    return value
