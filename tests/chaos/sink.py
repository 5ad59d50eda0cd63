"""The chaos workload's effect agent, run by real daemons as ``tests.chaos.sink:Sink``.

Its state is the effect log the checker reads: every applied cast's message id ``[sender, n]``, in the order
applied. A cast ``{"ch": SENDER, "n": N}`` appends ``[SENDER, N]`` (with ``"sleep": S`` it first sleeps S seconds: a
slow consumer); the call ``{"last": true}`` answers ``{"last": {SENDER: highest N applied}}``. Nothing here knows
about faults or checking: it only records.
"""

from __future__ import annotations

import time
from typing import Any

from agents.sdk import Agent


class Sink(Agent):
    def init(self) -> dict[str, Any]:
        return {"applied": []}

    def handle_cast(self, msg: Any, state: dict[str, Any]) -> dict[str, Any]:
        if isinstance(msg, dict) and msg.get("sleep"):
            time.sleep(float(msg["sleep"]))
        return {"applied": [*state["applied"], [msg["ch"], msg["n"]]]}

    def handle_call(self, msg: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        last: dict[str, int] = {}
        for ch, n in state["applied"]:
            last[ch] = max(last.get(ch, 0), n)
        return {"last": last}, state
