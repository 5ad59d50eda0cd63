"""Reads agents' committed state for ``foundationctl state``, keeping each agent's LMDB environment open.

Opening an environment costs a few system calls and a reader-table check; a script polling ``state`` would pay it
on the loop at every request. One read-only use per agent is kept open instead (a read transaction is short and
copies values out), and closed when the agent leaves the tree or the daemon stops. ``StateStore.load`` adopts a
map the agent has grown meanwhile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ipc.state_store import StateError, StateStore, agent_state_path


class StateReaders:
    def __init__(self, state_dir: Path) -> None:
        self._state_dir = state_dir
        self._open: dict[str, StateStore] = {}

    def load(self, name: str) -> tuple[Any | None, int]:
        """``(state, last_seq)``; ``(None, 0)`` for an agent that never committed. Raises StateError."""
        store = self._open.get(name)
        if store is None:
            path = agent_state_path(self._state_dir, name)
            if not (path / "data.mdb").exists():
                return None, 0
            store = self._open[name] = StateStore(path)
        try:
            return store.load()
        except StateError:
            self.forget(name)  # opened again at the next request
            raise

    def forget(self, name: str) -> None:
        store = self._open.pop(name, None)
        if store is not None:
            store.close()

    def close(self) -> None:
        for name in list(self._open):
            self.forget(name)
