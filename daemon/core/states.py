"""Lifecycle states of a node in the supervision tree (a leaf module: no imports from the daemon).

Every transition goes through ``Node.transition`` in the core, which checks it against ``ALLOWED``
so an impossible transition is a loud bug rather than a silent inconsistency.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


ALIVE = frozenset({State.STARTING, State.RUNNING, State.STOPPING})
DOWN = frozenset({State.STOPPED, State.FAILED})

ALLOWED: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.STARTING}),
    State.FAILED: frozenset({State.STARTING}),
    State.STARTING: frozenset({State.RUNNING, State.STOPPING, State.STOPPED, State.FAILED}),
    State.RUNNING: frozenset({State.STOPPING, State.STOPPED, State.FAILED}),
    State.STOPPING: frozenset({State.STOPPED, State.FAILED}),
}


class IllegalTransition(RuntimeError):
    """A bug in the core: a node was asked to move between states that do not connect."""
