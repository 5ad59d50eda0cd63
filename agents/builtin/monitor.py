"""The monitor agent (``monitor``): collects the agents' health for the services that decide on it.

Every ``FOUNDATION_MONITOR_INTERVAL`` seconds (10) it reads the daemon's status once and keeps, per child, its state,
restarts, pid and last exit; a call ``{"health": true}`` answers with that table and when it was taken. It keeps
nothing on disk: health is only worth its freshness.
"""

from __future__ import annotations

import os
import time
from typing import Any

from agents.sdk import Agent
from agents.workflow.client import Daemon
from ipc.control import ControlUnreachable
from ipc.errors import FoundationError


class Monitor(Agent):
    def __init__(self) -> None:
        self._daemon = Daemon(timeout=10.0)
        self._health: dict[str, Any] = {}
        self._taken: float | None = None
        self._interval = float(os.environ.get("FOUNDATION_MONITOR_INTERVAL", "10"))

    def mount(self, state: Any) -> None:
        self.set_timer(0.01, every=self._interval)

    def handle_info(self, info: Any, state: Any) -> Any:
        if isinstance(info, dict) and "tick" in info:
            self._collect()
        return state

    def handle_call(self, msg: Any, state: Any) -> tuple[Any, Any]:
        if isinstance(msg, dict) and msg.get("health"):
            return {"taken": self._taken, "children": self._health}, state
        raise ValueError(f"unknown call {msg!r}; expected {{'health': true}}")

    def _collect(self) -> None:
        try:
            tree = self._daemon.request("status")["tree"]
        except (FoundationError, ControlUnreachable, OSError, ValueError, KeyError):
            return  # the daemon is busy or going away; the next tick tries again
        health: dict[str, Any] = {}
        _walk(tree, health)
        self._health, self._taken = health, time.time()


def _walk(node: dict[str, Any], out: dict[str, Any]) -> None:
    for child in node.get("children", []):
        if child.get("type") == "supervisor":
            _walk(child, out)
        else:
            out[child["name"]] = {k: child.get(k) for k in ("state", "restarts", "pid", "last_exit")}
