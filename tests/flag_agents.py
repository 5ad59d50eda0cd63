"""Agents of the flag and migration tests, run by real daemons as ``tests.flag_agents:Name`` (with ``working_dir``
the repository root, as tests/agents_for_tests.py explains)."""

from __future__ import annotations

from typing import Any

from agents.examples.counter import Counter
from agents.sdk import Agent


class FlagProbe(Agent):
    """Answers ``{"enabled": [FLAG, ID]}`` from its runtime's flag table (``{"on_among": [FLAG, [ID, ...]]}``: the
    ids that are on), ``{"version": true}`` with that table's version; a cast ``{"fail": true}`` fails (a handler
    error), any other cast is counted."""

    def init(self) -> dict[str, Any]:
        return {"handled": 0}

    def handle_call(self, msg: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if "enabled" in msg:
            flag, ident = msg["enabled"]
            return self.enabled(flag, ident), state
        if "on_among" in msg:  # [FLAG, [ID, ...]] -> the ids that are on, from this agent's own copy
            flag, idents = msg["on_among"]
            return [i for i in idents if self.enabled(flag, i)], state
        if "version" in msg:
            return self._rt().flags.version, state
        return state, state

    def handle_cast(self, msg: Any, state: dict[str, Any]) -> dict[str, Any]:
        if isinstance(msg, dict) and msg.get("fail"):
            raise RuntimeError("failing on purpose")
        return {"handled": state["handled"] + 1}


class CounterV2(Counter):
    """The rollout tests' new version of the example counter: the same state, and it says which version it is."""

    def handle_call(self, msg: Any, state: dict[str, int]) -> tuple[Any, dict[str, int]]:
        if isinstance(msg, dict) and msg.get("version"):
            return 2, state
        return super().handle_call(msg, state)


class CrashOnStart(Counter):
    """A version that cannot start: it fails as it mounts its state."""

    def mount(self, state: Any) -> None:
        raise RuntimeError("this version crashes on start")


class Feeder(Agent):
    """Steady traffic for the rollout tests: a cast ``{"go": [NAMES], "every": S}`` makes it send ``{"n": N}``
    (N = 1, 2, ...) to each of NAMES every S seconds (a timer, no sleeping), until ``{"stop": true}``; a call
    ``{"sent": true}`` answers the last N sent."""

    def init(self) -> dict[str, Any]:
        return {"to": [], "n": 0}

    def handle_cast(self, msg: Any, state: dict[str, Any]) -> dict[str, Any]:
        if "go" in msg:
            self._timer = self.set_timer(msg["every"], every=msg["every"])
            return {"to": list(msg["go"]), "n": state["n"]}
        if msg.get("stop") and getattr(self, "_timer", None) is not None:
            self.cancel_timer(self._timer)
            return {"to": [], "n": state["n"]}
        return state

    def handle_info(self, info: Any, state: dict[str, Any]) -> dict[str, Any]:
        if not state["to"] or "tick" not in info:
            return state
        n = state["n"] + 1
        for name in state["to"]:
            self.send(name, {"n": n})
        return {"to": state["to"], "n": n}

    def handle_call(self, msg: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return state["n"], state


class Ledger(Agent):
    """Keeps every ``n`` it was sent, in order: a lost message is a gap, a duplicate shows twice. A call
    ``{"get": true}`` answers the list, ``{"version": true}`` 1."""

    version = 1

    def init(self) -> dict[str, Any]:
        return {"seen": []}

    def handle_cast(self, msg: Any, state: dict[str, Any]) -> dict[str, Any]:
        return {"seen": [*state["seen"], msg["n"]]} if isinstance(msg, dict) and "n" in msg else state

    def handle_call(self, msg: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return (self.version if msg.get("version") else state["seen"]), state


class LedgerV2(Ledger):
    """The healthy new version."""

    version = 2


class FlakyLedger(Ledger):
    """A new version that fails 20 % of its messages: every ``n`` divisible by 5 raises (the state is not changed
    and the message is done with an error, as any failing handler's)."""

    version = 3

    def handle_cast(self, msg: Any, state: dict[str, Any]) -> dict[str, Any]:
        if isinstance(msg, dict) and msg.get("n", 1) % 5 == 0:
            raise RuntimeError(f"version 3 fails message {msg['n']}")
        return super().handle_cast(msg, state)


class Profile(Agent):
    """The state migration tests' agent: ``{"name": "Ada Lovelace", "visits": N}`` at first; a cast ``{"visit":
    true}`` counts, ``{"fail": true}`` fails; a call answers the state. It has no schema: the expand and contract
    stages below change its state's shape while it runs."""

    def init(self) -> dict[str, Any]:
        return {"name": "Ada Lovelace", "visits": 0}

    def handle_cast(self, msg: Any, state: dict[str, Any]) -> dict[str, Any]:
        if msg.get("fail"):
            raise RuntimeError("failing on purpose")
        return {**state, "visits": state["visits"] + 1}

    def handle_call(self, msg: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return state, state


# State migrations of Profile (``module:function`` in [[migration.stages]] state): expand, then contract, each with
# its reverse. They run in the agent's process as it starts.

def split_name(state: dict[str, Any]) -> dict[str, Any]:
    """Expand: the new fields beside the old one (old and new code both work)."""
    first, _, last = state["name"].partition(" ")
    return {**state, "first": first, "last": last}


def drop_split(state: dict[str, Any]) -> dict[str, Any]:
    """Expand's reverse."""
    return {k: v for k, v in state.items() if k not in ("first", "last")}


def drop_name(state: dict[str, Any]) -> dict[str, Any]:
    """Contract: the old field goes."""
    return {k: v for k, v in state.items() if k != "name"}


def join_name(state: dict[str, Any]) -> dict[str, Any]:
    """Contract's reverse: the old field from the new ones."""
    return {**state, "name": f"{state['first']} {state['last']}"}


def broken(state: dict[str, Any]) -> dict[str, Any]:
    raise ValueError("this migration cannot run")
