"""What systemd hears from the daemon: READY=1 once the tree is up, a STATUS= line after every batch of events
(children running, restarts in the last minute), and WATCHDOG=1 pings sent from the loop itself, so a wedged loop
stops pinging and systemd restarts the daemon."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from daemon.core.states import State
from daemon.core.tree import AnyNode, SupervisionTree, Supervisor
from daemon.shell.loop import TimerHandle
from daemon.shell.notify import Notifier

log = logging.getLogger("foundationd")

CallLater = Callable[[float, Callable[[], None]], TimerHandle]


class SystemdStatus:
    def __init__(self, notifier: Notifier, tree: SupervisionTree, clock: Callable[[], float],
                 call_later: CallLater) -> None:
        self._notifier, self._tree, self._clock, self._call_later = notifier, tree, clock, call_later
        self.ready_sent = False
        self._restart_times: deque[float] = deque()
        self._restarts_seen = 0
        self._refresh: TimerHandle | None = None

    def start_watchdog(self) -> None:
        if self._notifier.enabled and self._notifier.watchdog_interval:  # no socket: nobody to ping
            self._ping()

    def after_batch(self) -> None:
        """After every batch of events: READY=1 once the tree is up, and a current STATUS= line."""
        if not self.ready_sent and self._tree.root.state is State.RUNNING:
            self.ready_sent = True
            self._notifier.ready()
            log.info("tree started")
        if self._notifier.enabled:
            self._notifier.status(self._summary())

    def _summary(self) -> str:
        workers = self._tree.workers()
        running = sum(1 for w in workers if w.state is State.RUNNING)
        now = self._clock()
        total = total_restarts(self._tree.root)
        self._restart_times.extend([now] * max(0, total - self._restarts_seen))
        self._restarts_seen = total
        while self._restart_times and self._restart_times[0] <= now - 60:
            self._restart_times.popleft()
        if self._restart_times and self._refresh is None:  # refresh when the oldest leaves the minute
            self._refresh = self._call_later(self._restart_times[0] + 60 - now, self._refresh_status)
        return f"{running}/{len(workers)} children running, {len(self._restart_times)} restarts in the last minute"

    def _refresh_status(self) -> None:
        self._refresh = None
        self._notifier.status(self._summary())

    def _ping(self) -> None:
        self._notifier.watchdog()
        assert self._notifier.watchdog_interval is not None
        self._call_later(self._notifier.watchdog_interval, self._ping)


def total_restarts(node: AnyNode) -> int:
    if isinstance(node, Supervisor):
        return sum(total_restarts(c) for c in node.children)
    return node.restarts
