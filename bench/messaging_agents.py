"""An agent for bench/messaging_peers.py: sends casts to another agent through the broker socket, one at a time, as
any agent's handler does (``self.send`` returns once the broker has committed the message), and writes how long
each send took to a file the benchmark reads.

The handler's sends carry channel marks (``chan``), so the broker also commits the mark with each message: the
agent-to-agent path exactly as agents use it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from agents.sdk import Agent


class Sender(Agent):
    def init(self) -> dict[str, int]:
        return {"sent": 0}

    def handle_cast(self, msg: Any, state: dict[str, int]) -> dict[str, int]:
        """``{"to": NAME, "n": N, "out": PATH}``: N casts ``{"add": 1}`` to NAME; the N latencies (s) go to PATH."""
        latencies = []
        for _ in range(int(msg["n"])):
            t0 = time.perf_counter()
            self.send(msg["to"], {"add": 1})
            latencies.append(time.perf_counter() - t0)
        Path(msg["out"]).write_bytes(orjson.dumps(latencies))
        return {"sent": state["sent"] + len(latencies)}
