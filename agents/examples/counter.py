"""The example counter (DESIGN 3.4): the smallest agent that shows messaging and persistence.

State ``{"count": 0}`` at first start; a cast ``{"add": N}`` adds N; a call ``{"get": true}`` replies
``{"count": C}``. Its count survives SIGKILL of itself and of the daemon, and no accepted ``add`` is
counted twice.
"""

from __future__ import annotations

from typing import Any

from agents.sdk import Agent


def _valid(state: Any) -> bool:
    return isinstance(state, dict) and isinstance(state.get("count"), int) and set(state) == {"count"}


class Counter(Agent):
    schema = staticmethod(_valid)

    def init(self) -> dict[str, int]:
        return {"count": 0}

    def handle_cast(self, msg: Any, state: dict[str, int]) -> dict[str, int]:
        if isinstance(msg, dict) and "add" in msg:
            return {"count": state["count"] + msg["add"]}
        return state

    def handle_call(self, msg: Any, state: dict[str, int]) -> tuple[Any, dict[str, int]]:
        if isinstance(msg, dict) and msg.get("get"):
            return {"count": state["count"]}, state
        raise ValueError(f"unknown call {msg!r}; expected {{'get': true}}")
