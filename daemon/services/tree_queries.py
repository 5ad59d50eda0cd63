"""What the broker and the memory watch ask of the tree (is this agent alive, its mailbox bound, its liveness
interval, which children have a memory limit) and the kills they request, answered from the core's nodes."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

from daemon.core.states import State
from daemon.core.tree import SupervisionTree, Worker

log = logging.getLogger("foundationd")


class TreeQueries:
    def __init__(self, tree: SupervisionTree, send_signal: Callable[[int, int], None]) -> None:
        self._tree, self._signal = tree, send_signal
        self.on_kill: Callable[[int, str], None] = lambda pid, cause: None  # (pid, "heartbeat"): for the events

    def agent_alive(self, name: str) -> bool | None:
        node = self._tree.find_quiet(name)
        if not isinstance(node, Worker) or not node.spec.agent:
            return None
        return node.state in (State.STARTING, State.RUNNING)

    def kill_agent(self, name: str, reason: str) -> None:
        node = self._tree.find_quiet(name)
        if isinstance(node, Worker) and node.pid is not None:
            log.warning("killing %s: %s", name, reason)
            self.on_kill(node.pid, "heartbeat")
            self._signal(node.pid, signal.SIGKILL)

    def liveness(self, name: str) -> float:
        node = self._tree.find_quiet(name)
        return node.spec.liveness if isinstance(node, Worker) else 10.0

    def mailbox_bound(self, name: str) -> int:
        node = self._tree.find_quiet(name)
        return node.spec.mailbox if isinstance(node, Worker) else 1

    def memory_watched(self) -> list[tuple[str, int, int]]:
        return [(w.name, w.pid, w.spec.max_memory) for w in self._tree.workers()
                if w.spec.max_memory is not None and w.pid is not None and w.state in (State.STARTING, State.RUNNING)]

    def kill_for_memory(self, name: str, pid: int, reason: str) -> None:
        node = self._tree.find_quiet(name)
        if isinstance(node, Worker) and node.pid == pid:
            log.warning("killing %s (pid %d): %s", name, pid, reason)
            self.on_kill(pid, "max_memory")
            self._signal(pid, signal.SIGKILL)
