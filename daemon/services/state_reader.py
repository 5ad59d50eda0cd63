"""Reads agents' committed state for ``foundationctl state``, keeping each agent's LMDB environment open.

Opening an environment costs a few system calls and a reader-table check; a script polling ``state`` would pay it
on the loop at every request. One read-only use per agent is kept open instead (a read transaction is short and
copies values out), and closed when the agent leaves the tree or the daemon stops. ``StateStore.load`` adopts a
map the agent has grown meanwhile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ipc.state_store import SharedStateStore, StateError, StateStore, agent_state_path, shared_store_path


class StateReaders:
    def __init__(self, state_dir: Path) -> None:
        self._state_dir = state_dir
        self._open: dict[str, StateStore] = {}
        self._shared: dict[Path, SharedStateStore] = {}  # one per shared environment (py-lmdb opens one per process)

    def load(self, name: str) -> tuple[Any | None, int]:
        """``(state, last_seq)``; ``(None, 0)`` for an agent that never committed. Raises StateError."""
        shared = shared_store_path(self._state_dir, name)
        if shared is not None:
            return self._load_shared(shared, name)
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

    def shared(self, path: Path) -> SharedStateStore | None:
        """The shared environment at ``path``, opened once; None while it does not exist."""
        store = self._shared.get(path)
        if store is None:
            if not (path / "data.mdb").exists():
                return None
            store = self._shared[path] = SharedStateStore(path)
        return store

    def _load_shared(self, path: Path, name: str) -> tuple[Any | None, int]:
        store = self.shared(path)
        if store is None:
            return None, 0
        try:
            return store.load_of(name)
        except StateError:
            self._shared.pop(path, None)
            store.close()
            raise

    def forget(self, name: str) -> None:
        store = self._open.pop(name, None)
        if store is not None:
            store.close()

    def close(self) -> None:
        for name in list(self._open):
            self.forget(name)
        for store in self._shared.values():
            store.close()
        self._shared.clear()
