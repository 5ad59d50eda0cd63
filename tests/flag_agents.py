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
