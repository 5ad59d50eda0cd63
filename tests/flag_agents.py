"""Agents of the flag and migration tests, run by real daemons as ``tests.flag_agents:Name`` (with ``working_dir``
the repository root, as tests/agents_for_tests.py explains)."""

from __future__ import annotations

from typing import Any

from agents.examples.counter import Counter
from agents.sdk import Agent


class FlagProbe(Agent):
    """Answers ``{"enabled": [FLAG, ID]}`` from its runtime's flag table, ``{"version": true}`` with that table's
    version; a cast ``{"fail": true}`` fails (a handler error), any other cast is counted."""

    def init(self) -> dict[str, Any]:
        return {"handled": 0}

    def handle_call(self, msg: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if "enabled" in msg:
            flag, ident = msg["enabled"]
            return self.enabled(flag, ident), state
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
