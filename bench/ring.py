"""A ring of agents passing tokens, for bench/scaling.py: how messaging between agents scales with their number.

Agents ``ring0`` .. ``ring{N-1}`` (N in the environment as ``RING_SIZE``) and one ``sink`` (a counter). A cast
``{"hops": H}`` to ``ringI`` counts one message and, while H > 0, sends ``{"hops": H-1}`` to the next agent of the
ring (durably: ``send`` returns once the daemon has accepted it); the last hop adds 1 to the sink. So K tokens of H
hops are K * (H + 1) messages between agents, and the sink's count says when they are all through.
"""

from __future__ import annotations

import os
from typing import Any

from agents.sdk import Agent


class Ring(Agent):
    def init(self) -> dict[str, int]:
        return {"seen": 0}

    def handle_cast(self, msg: Any, state: dict[str, int]) -> dict[str, int]:
        hops = int(msg["hops"])
        if hops > 0:
            size = int(os.environ.get("RING_SIZE", "1"))
            me = int(self.name.removeprefix("ring"))
            self.send(f"ring{(me + 1) % size}", {"hops": hops - 1})
        else:
            self.send("sink", {"add": 1})
        return {"seen": state["seen"] + 1}

    def handle_call(self, msg: Any, state: dict[str, int]) -> tuple[Any, dict[str, int]]:
        return dict(state), state
